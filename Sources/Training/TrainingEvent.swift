import Foundation

/// Progress of a training run, reported to a callback (the library never prints).
public enum TrainingEvent: Sendable {
    case step(index: Int, total: Int, loss: Double, parts: [String: Double], lr: Double, gradNorm: Double?, seconds: Double)
    case finished(steps: Int, seconds: Double)
}
