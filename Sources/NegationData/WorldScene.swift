import Foundation
import SeededRandom


/// The world's colours: names are single words of the world vocabulary; RGB values are far
/// apart so that a small CNN can tell them apart under background noise.
public enum WorldColour: String, CaseIterable, Codable, Sendable {
    case red, green, blue, yellow, purple, orange, white, black
    public var rgb: (UInt8, UInt8, UInt8) {
        switch self {
        case .red: return (220, 30, 30)
        case .green: return (30, 170, 40)
        case .blue: return (30, 60, 220)
        case .yellow: return (240, 220, 30)
        case .purple: return (140, 40, 180)
        case .orange: return (250, 140, 20)
        case .white: return (250, 250, 250)
        case .black: return (10, 10, 10)
        }
    }
}

public enum WorldShape: String, CaseIterable, Codable, Sendable {
    case circle, square, triangle, diamond, cross, ring

    /// Whether pixel offset (dx, dy) from the centre, in units of the radius, is inside.
    func contains(dx: Double, dy: Double) -> Bool {
        switch self {
        case .circle: return dx * dx + dy * dy <= 1
        case .square: return abs(dx) <= 0.8 && abs(dy) <= 0.8
        case .diamond: return abs(dx) + abs(dy) <= 1
        case .cross: return (abs(dx) <= 0.3 && abs(dy) <= 1) || (abs(dy) <= 0.3 && abs(dx) <= 1)
        case .ring:
            let d2 = dx * dx + dy * dy
            return d2 <= 1 && d2 >= 0.3
        case .triangle:
            // Apex up at dy = -1, base at dy = +0.8; the half-width grows linearly down the height.
            guard dy >= -1, dy <= 0.8 else { return false }
            return abs(dx) <= (dy + 1) / 1.8
        }
    }

    /// How far the shape reaches from its centre, in units of the radius: the largest |(dx, dy)|
    /// that `contains` accepts (a square's corner, the triangle's base corners, the end of a
    /// cross arm's edge). Layout checks use `radius * extent`, never the bare radius.
    public var extent: Double {
        switch self {
        case .circle, .ring, .diamond: return 1
        case .square: return (0.8 * 0.8 * 2).squareRoot()
        case .triangle: return (1 + 0.8 * 0.8).squareRoot()
        case .cross: return (1 + 0.3 * 0.3).squareRoot()
        }
    }
}

/// A colour-shape combination, the unit of the world's semantics ("red circle").
public struct ObjectKind: Hashable, Codable, Comparable, Sendable, CustomStringConvertible {
    public let colour: WorldColour
    public let shape: WorldShape
    public init(_ colour: WorldColour, _ shape: WorldShape) { self.colour = colour; self.shape = shape }
    public var name: String { "\(colour.rawValue) \(shape.rawValue)" }
    public var description: String { name }
    /// Parses "red circle"; nil for anything else.
    public init?(name: String) {
        let parts = name.split(separator: " ")
        guard parts.count == 2, let c = WorldColour(rawValue: String(parts[0])),
              let s = WorldShape(rawValue: String(parts[1])) else { return nil }
        self.init(c, s)
    }
    public static var all: [ObjectKind] {
        WorldColour.allCases.flatMap { c in WorldShape.allCases.map { ObjectKind(c, $0) } }
    }
    var index: Int {
        WorldColour.allCases.firstIndex(of: colour)! * WorldShape.allCases.count + WorldShape.allCases.firstIndex(of: shape)!
    }
    public static func < (a: ObjectKind, b: ObjectKind) -> Bool { a.index < b.index }
    /// Shares a colour or a shape (the "plausible absent object" of an absence negation).
    public func isRelated(to other: ObjectKind) -> Bool {
        self != other && (colour == other.colour || shape == other.shape)
    }
}

/// One drawn object: centre and radius in pixels.
public struct SceneObject: Codable, Equatable, Sendable {
    public var kind: ObjectKind
    public var x: Double
    public var y: Double
    public var radius: Double
}

/// A disc that holds one object: centre and radius in pixels. Objects are drawn inside their slot
/// (`SceneObject.radius * shape.extent == bound`), so disjoint slots mean disjoint shapes.
public struct Slot: Equatable, Sendable {
    public var x: Double
    public var y: Double
    public var bound: Double
}

/// A scene: distinct object kinds (never two red circles, so captions need no counting) in
/// disjoint slots, plus the seed of its background noise.
public struct Scene: Codable, Equatable, Sendable {
    public var objects: [SceneObject]
    public var noiseSeed: UInt64
    public var kinds: Set<ObjectKind> { Set(objects.map(\.kind)) }
    public var objectNames: [String] { objects.map(\.kind.name) }

    /// Bounding radii of the slots as fractions of the image side.
    static let boundRange = (0.09, 0.18)

    /// `count` (at most 4) pairwise disjoint slots inside a size x size image, at least 1 pixel
    /// apart and 1 pixel from the border. Rejection sampling first; when a layout jams (an
    /// unlucky early slot leaves no room), a fresh layout, and after 20 of those one slot per
    /// quadrant, which always fits: so the guarantee never depends on luck.
    public static func slots(count: Int, size: Int, rng: inout SplitMix64) -> [Slot] {
        precondition((0...4).contains(count))
        let s = Double(size)
        let bMin = boundRange.0 * s, bMax = min(boundRange.1 * s, s / 4 - 1)
        for _ in 0..<20 {
            var slots: [Slot] = []
            for _ in 0..<count {
                for _ in 0..<50 {
                    let b = rng.uniform(bMin, bMax)
                    let x = rng.uniform(b + 1, s - b - 1), y = rng.uniform(b + 1, s - b - 1)
                    let free = slots.allSatisfy { o in
                        let dx = o.x - x, dy = o.y - y
                        return (dx * dx + dy * dy).squareRoot() >= o.bound + b + 1
                    }
                    if free { slots.append(Slot(x: x, y: y, bound: b)); break }
                }
            }
            if slots.count == count { return slots }
        }
        // Quadrants of side s/2; a slot stays 1 pixel inside its quadrant, so two slots are at
        // least 2 pixels apart.
        var quadrants = [(0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.5, 0.5)]
        rng.shuffle(&quadrants)
        return quadrants.prefix(count).map { q in
            let b = rng.uniform(bMin, bMax)
            let x0 = q.0 * s, y0 = q.1 * s
            return Slot(x: rng.uniform(x0 + b + 1, x0 + s / 2 - b - 1), y: rng.uniform(y0 + b + 1, y0 + s / 2 - b - 1), bound: b)
        }
    }

    /// The object `kind` drawn as large as `slot` allows.
    public static func object(_ kind: ObjectKind, in slot: Slot) -> SceneObject {
        SceneObject(kind: kind, x: slot.x, y: slot.y, radius: slot.bound / kind.shape.extent)
    }

    /// Place `kinds` (at most 4) in disjoint slots of a size x size image.
    public static func random(kinds: [ObjectKind], size: Int, rng: inout SplitMix64) -> Scene {
        let slots = slots(count: kinds.count, size: size, rng: &rng)
        return Scene(objects: zip(kinds, slots).map { object($0, in: $1) }, noiseSeed: rng.next())
    }

    /// Render to RGB bytes, row-major [size, size, 3]. The background is grey with strong
    /// per-pixel noise and a random tint; objects get weaker noise so colours stay readable.
    public func render(size: Int) -> [UInt8] {
        var rng = SplitMix64(seed: noiseSeed)
        let base = (90 + rng.below(60), 90 + rng.below(60), 90 + rng.below(60))
        var px = [UInt8](repeating: 0, count: size * size * 3)
        func clamp(_ v: Int) -> UInt8 { UInt8(max(0, min(255, v))) }
        for y in 0..<size {
            for x in 0..<size {
                let o = (y * size + x) * 3
                var colour = (base.0, base.1, base.2)
                var amplitude = 40
                // Sample at the pixel centre; objects never overlap (disjoint slots), so the order
                // of drawing does not matter.
                for obj in objects {
                    let dx = (Double(x) + 0.5 - obj.x) / obj.radius, dy = (Double(y) + 0.5 - obj.y) / obj.radius
                    if obj.kind.shape.contains(dx: dx, dy: dy) {
                        let c = obj.kind.colour.rgb
                        colour = (Int(c.0), Int(c.1), Int(c.2)); amplitude = 12
                    }
                }
                let n = rng.below(2 * amplitude + 1) - amplitude
                px[o] = clamp(colour.0 + n + rng.below(9) - 4)
                px[o + 1] = clamp(colour.1 + n + rng.below(9) - 4)
                px[o + 2] = clamp(colour.2 + n + rng.below(9) - 4)
            }
        }
        return px
    }
}
