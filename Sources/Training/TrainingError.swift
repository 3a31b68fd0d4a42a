import Foundation

/// Typed, one-line errors of the Training module.
public enum TrainingError: Error, CustomStringConvertible, Equatable {
    case checkpoint(file: String, message: String)
    case shape(file: String, key: String, expected: [Int], found: [Int])
    case groups(String)
    case input(String)
    case diverged(step: Int, part: String, value: Double)

    public var description: String {
        switch self {
        case let .checkpoint(file, message): return "\(file): \(message)"
        case let .shape(file, key, expected, found):
            return "\(file): tensor \(key): expected \(expected), found \(found) - does config.json describe this checkpoint?"
        case let .groups(message): return "trainable groups: \(message)"
        case let .input(message): return message
        case let .diverged(step, part, value):
            return "step \(step): loss part \(part) is \(value); stopped before the update (lower --lr, set --clip-grad, or check the data)"
        }
    }
}
