import Testing
import TestSupport
@testable import BPETokenizer

@Test func BPETokenizerBuilds() {
    #expect(Fixtures.root.path.hasSuffix("Tests/Fixtures"))
}
