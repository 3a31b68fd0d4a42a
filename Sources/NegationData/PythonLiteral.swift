import Foundation

/// Reads the one Python literal the peers' CSV/TSV files hold in a cell: a list of strings, as
/// `str(list_of_str)` writes it (NegBench's `captions`, NegCLIP's `neg_caption`; their loaders read
/// the cell back with `eval` / `ast.literal_eval`). Strings are single- or double-quoted with
/// Python's escapes; anything else is an error naming what was found where.
enum PythonLiteral {
    struct ParseError: Error, CustomStringConvertible {
        var offset: Int
        var expected: String
        var description: String { "expected \(expected) at character \(offset + 1)" }
    }

    /// `['a', "b's"]` -> ["a", "b's"]. An empty list parses (the caller decides if it is allowed).
    static func stringList(_ text: String) throws -> [String] {
        let c = Array(text.unicodeScalars)
        var i = 0
        func skipSpace() { while i < c.count, c[i].properties.isWhitespace { i += 1 } }
        func fail(_ what: String) -> ParseError { ParseError(offset: i, expected: what) }
        skipSpace()
        guard i < c.count, c[i] == "[" else { throw fail("'['") }
        i += 1
        var out: [String] = []
        skipSpace()
        if i < c.count, c[i] == "]" {
            i += 1
        } else {
            while true {
                skipSpace()
                out.append(try string(c, &i))
                skipSpace()
                guard i < c.count else { throw fail("',' or ']'") }
                if c[i] == "]" { i += 1; break }
                guard c[i] == "," else { throw fail("',' or ']'") }
                i += 1
                skipSpace()
                if i < c.count, c[i] == "]" { i += 1; break } // trailing comma
            }
        }
        skipSpace()
        guard i == c.count else { throw fail("the end of the list") }
        return out
    }

    /// One quoted string starting at `i`; leaves `i` after the closing quote.
    static func string(_ c: [Unicode.Scalar], _ i: inout Int) throws -> String {
        guard i < c.count, c[i] == "'" || c[i] == "\"" else { throw ParseError(offset: i, expected: "a quoted string") }
        let quote = c[i]
        let start = i
        i += 1
        var out = String.UnicodeScalarView()
        while true {
            guard i < c.count, c[i] != "\n" else { throw ParseError(offset: start, expected: "a string closed on the same line") }
            let ch = c[i]
            if ch == quote { i += 1; return String(out) }
            if ch != "\\" { out.append(ch); i += 1; continue }
            guard i + 1 < c.count else { throw ParseError(offset: i, expected: "a character after '\\'") }
            let e = c[i + 1]
            i += 2
            switch e {
            case "\\", "'", "\"": out.append(e)
            case "n": out.append("\n")
            case "t": out.append("\t")
            case "r": out.append("\r")
            case "x", "u", "U":
                let n = e == "x" ? 2 : (e == "u" ? 4 : 8)
                guard i + n <= c.count, let v = UInt32(String(String.UnicodeScalarView(c[i..<(i + n)])), radix: 16),
                      let s = Unicode.Scalar(v) else {
                    throw ParseError(offset: i - 2, expected: "\\\(e) with \(n) hex digits")
                }
                out.append(s)
                i += n
            default:
                // Python keeps an unknown escape as written ("\d" is backslash, d).
                out.append("\\"); out.append(e)
            }
        }
    }
}
