import Foundation
import HiddenStateStore

/// Which shard of the input a dump writes: shard `index` (0-based) of `count`. The items it gets
/// are `StoreShard.range` in whole batches of `DumpRequest.batchSize`: with b = ceil(n / batch),
/// batches [floor(index * b / count), floor((index + 1) * b / count)).
public struct ShardSpec: Sendable, Equatable, CustomStringConvertible {
    public var index: Int
    public var count: Int

    public init(index: Int, count: Int) throws {
        guard count >= 1 else { throw ShardError("shard count \(count): expected at least 1") }
        guard (0..<count).contains(index) else {
            throw ShardError("shard index \(index) of \(count): expected 0...\(count - 1) (shards are numbered from 0)")
        }
        self.index = index
        self.count = count
    }

    public var description: String { "\(index)/\(count)" }

    /// "K/N" (0-based K, 0 <= K < N).
    public static func parse(_ text: String, option: String = "--shard") throws -> ShardSpec {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let k = Int(parts[0]), let n = Int(parts[1]) else {
            throw ShardError("\(option) \(text): expected K/N, shard K (0-based) of N, e.g. 0/4")
        }
        guard n >= 1 else { throw ShardError("\(option) \(text): expected N >= 1 shards, found \(n)") }
        guard (0..<n).contains(k) else {
            throw ShardError("\(option) \(text): expected 0 <= K < N (shards are numbered from 0: 0/\(n) ... \(n - 1)/\(n)), found K = \(k)")
        }
        return try ShardSpec(index: k, count: n)
    }

    /// The shard of this process: `--shard K/N` when given, else Slurm's job-array variables
    /// (`SLURM_ARRAY_TASK_ID` of `SLURM_ARRAY_TASK_COUNT`, an array submitted as `--array=0-(N-1)`),
    /// else a Kubernetes indexed Job's `JOB_COMPLETION_INDEX` with `shards` (`--shards N`, the Job's
    /// completions); nil when none applies or `noShard`. Also returns where K/N came from, for stderr.
    public static func resolve(option: String?, shards: Int?, noShard: Bool = false,
                               environment: [String: String] = ProcessInfo.processInfo.environment) throws -> (spec: ShardSpec, source: String)? {
        func env(_ key: String) -> String? {
            guard let v = environment[key]?.trimmingCharacters(in: .whitespaces), !v.isEmpty else { return nil }
            return v
        }
        func integer(_ key: String, _ value: String) throws -> Int {
            guard let v = Int(value), v >= 0 else { throw ShardError("\(key)=\(value): expected a non-negative integer") }
            return v
        }
        if let shards, shards < 1 { throw ShardError("--shards \(shards): expected at least 1") }
        if noShard {
            if option != nil || shards != nil { throw ShardError("--no-shard excludes --shard and --shards") }
            return nil
        }
        if let option {
            let spec = try parse(option)
            if let shards, shards != spec.count { throw ShardError("--shard \(option) and --shards \(shards) disagree on the number of shards") }
            return (spec, "--shard \(option)")
        }
        if let id = env("SLURM_ARRAY_TASK_ID") {
            let k = try integer("SLURM_ARRAY_TASK_ID", id)
            guard let countText = env("SLURM_ARRAY_TASK_COUNT") else {
                throw ShardError("SLURM_ARRAY_TASK_ID=\(id) is set but SLURM_ARRAY_TASK_COUNT is not: expected both (a job array), or pass --shard K/N or --no-shard")
            }
            let n = try integer("SLURM_ARRAY_TASK_COUNT", countText)
            guard n >= 1 else { throw ShardError("SLURM_ARRAY_TASK_COUNT=\(countText): expected at least 1") }
            // Shards are the array indices 0...N-1: a 1-based or stepped array would skip a shard.
            if let min = env("SLURM_ARRAY_TASK_MIN"), min != "0" {
                throw ShardError("SLURM_ARRAY_TASK_MIN=\(min): expected 0 (shards are 0-based: submit with --array=0-\(n - 1))")
            }
            if let max = env("SLURM_ARRAY_TASK_MAX"), max != "\(n - 1)" {
                throw ShardError("SLURM_ARRAY_TASK_MAX=\(max) with SLURM_ARRAY_TASK_COUNT=\(n): expected \(n - 1) (one task per shard: submit with --array=0-\(n - 1))")
            }
            if let step = env("SLURM_ARRAY_TASK_STEP"), step != "1" {
                throw ShardError("SLURM_ARRAY_TASK_STEP=\(step): expected 1 (one task per shard: submit with --array=0-\(n - 1))")
            }
            guard k < n else {
                throw ShardError("SLURM_ARRAY_TASK_ID=\(k) with SLURM_ARRAY_TASK_COUNT=\(n): expected an index 0...\(n - 1) (submit with --array=0-\(n - 1))")
            }
            if let shards, shards != n {
                throw ShardError("--shards \(shards) and SLURM_ARRAY_TASK_COUNT=\(n) disagree on the number of shards")
            }
            return (try ShardSpec(index: k, count: n), "SLURM_ARRAY_TASK_ID=\(k), SLURM_ARRAY_TASK_COUNT=\(n)")
        }
        if let index = env("JOB_COMPLETION_INDEX") {
            let k = try integer("JOB_COMPLETION_INDEX", index)
            guard let n = shards else {
                throw ShardError("JOB_COMPLETION_INDEX=\(index) is set (a Kubernetes indexed Job): pass --shards N (the Job's completions), or --shard K/N, or --no-shard")
            }
            guard k < n else {
                throw ShardError("JOB_COMPLETION_INDEX=\(k) with --shards \(n): expected an index 0...\(n - 1) (set the Job's completions to --shards)")
            }
            return (try ShardSpec(index: k, count: n), "JOB_COMPLETION_INDEX=\(k), --shards \(n)")
        }
        if let shards {
            throw ShardError("--shards \(shards): no shard index: expected JOB_COMPLETION_INDEX (Kubernetes indexed Job) or SLURM_ARRAY_TASK_ID in the environment, or pass --shard K/\(shards)")
        }
        return nil
    }
}

/// A bad `--shard`, `--shards` or shard environment variable: one line.
public struct ShardError: Error, Equatable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
