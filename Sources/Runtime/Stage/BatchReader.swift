import Glibc

/// An NDJSON input that cannot be read: `path` cannot be opened.
public struct InputFileError: Error, CustomStringConvertible {
    public var path: String
    public var description: String { "\(path): cannot open" }
}

/// Reads NDJSON input (files in order, or stdin) in batches of whole lines, each batch read
/// straight into its own buffer: no per-line copy, lines found with memchr, a line cut by the
/// end of a read carried over to the next batch. Blank lines (spaces, tabs, CR only) are skipped.
///
/// A batch holds at most `maxLines` lines; it holds fewer when its buffer filled first, and the
/// buffer then doubles for the next batch (up to 64 MiB; a longer line grows it as needed), so a
/// batch never splits a line.
public final class BatchReader {
    public typealias Batch = (bytes: [UInt8], ranges: [Range<Int>])

    private var fds: [Int32]
    private var carry: [UInt8] = []   // the start of a line the last batch's buffer cut
    private var eof = false
    private var capacity = 1 << 18
    private static let maxCapacity = 1 << 26

    public init(paths: [String]) throws(InputFileError) {
        if paths.isEmpty {
            fds = [STDIN_FILENO]
        } else {
            var opened: [Int32] = []
            for p in paths {
                let fd = open(p, O_RDONLY)
                if fd < 0 {
                    for f in opened { close(f) }
                    throw InputFileError(path: p)
                }
                opened.append(fd)
            }
            fds = opened
        }
    }

    /// No line is left to read: the last batch has been returned.
    public var finished: Bool { eof && carry.isEmpty }

    /// The next batch; its `ranges` are empty only at the end of the input.
    public func next(maxLines: Int) -> Batch {
        while true {
            var ranges: [Range<Int>] = []
            ranges.reserveCapacity(min(maxLines, 4096))
            let cap = max(capacity, carry.count + (1 << 16))
            var tail = 0..<0
            var full = false
            let bytes = [UInt8](unsafeUninitializedCapacity: cap) { buf, filled in
                let base = buf.baseAddress!
                carry.withUnsafeBufferPointer { c in
                    if let p = c.baseAddress { base.initialize(from: p, count: c.count) }
                }
                filled = carry.count
                var scanned = 0
                while ranges.count < maxLines {
                    if scanned < filled, let hit = memchr(base + scanned, 0x0A, filled - scanned) {
                        let nl = base.distance(to: hit.assumingMemoryBound(to: UInt8.self))
                        Self.add(scanned..<nl, base, to: &ranges)
                        scanned = nl + 1
                        continue
                    }
                    if eof {
                        if scanned < filled { Self.add(scanned..<filled, base, to: &ranges) }
                        scanned = filled
                        break
                    }
                    if filled == cap {   // the rest of this line waits for the next batch
                        full = true
                        break
                    }
                    fill(base, &filled, cap)
                }
                tail = scanned..<filled
            }
            carry = Array(bytes[tail])
            if full && ranges.count < maxLines { capacity = min(2 * capacity, Self.maxCapacity) }
            if !ranges.isEmpty || (eof && carry.isEmpty) { return (bytes, ranges) }
            // one line longer than the buffer: grow it past the line and read on
            capacity = max(capacity, 2 * carry.count)
        }
    }

    /// Reads into base[filled..<cap] from the current file, moving to the next one at its end.
    private func fill(_ base: UnsafeMutablePointer<UInt8>, _ filled: inout Int, _ cap: Int) {
        let n = read(fds[0], base + filled, cap - filled)
        if n > 0 {
            filled += n
        } else if n < 0 && errno == EINTR {
            return
        } else {
            if fds[0] != STDIN_FILENO { close(fds[0]) }
            fds.removeFirst()
            if fds.isEmpty { eof = true }
        }
    }

    private static func add(_ line: Range<Int>, _ base: UnsafeMutablePointer<UInt8>, to ranges: inout [Range<Int>]) {
        for i in line where base[i] != 0x20 && base[i] != 0x09 && base[i] != 0x0D {
            ranges.append(line)
            return
        }
    }
}
