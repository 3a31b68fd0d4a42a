import Foundation

/// Why a vocabulary could not be loaded. `description` is one line naming the file, the key or line,
/// and what was expected.
public enum TokenizerError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The file is missing or unreadable.
    case unreadable(file: String, reason: String)
    /// The file is readable but its content is not what a CLIP vocabulary holds.
    case malformed(file: String, location: String, expected: String, found: String)
    /// A token the tokenizer needs is absent from vocab.json.
    case missingToken(file: String, token: String, why: String)
    /// A caller-supplied setting is out of range.
    case invalidArgument(String)

    public var description: String {
        switch self {
        case let .unreadable(file, reason):
            return "\(file): cannot read (\(reason))"
        case let .malformed(file, location, expected, found):
            return "\(file): \(location): expected \(expected), found \(found)"
        case let .missingToken(file, token, why):
            return "\(file): token \(quoted(token)) is missing (\(why))"
        case let .invalidArgument(message):
            return message
        }
    }
}

/// A token or line in an error message: JSON-style escaping keeps the message on one line.
func quoted(_ s: String, limit: Int = 60) -> String {
    var out = "\""
    for scalar in s.unicodeScalars.prefix(limit) {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if scalar.value < 0x20 || scalar.properties.isWhitespace && scalar != " " {
                out += String(format: "\\u%04X", scalar.value)
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    if s.unicodeScalars.count > limit { out += "..." }
    return out + "\""
}
