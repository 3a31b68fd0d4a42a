import Testing
import TestSupport
@testable import CLIP

@Test func CLIPBuilds() {
    #expect(Fixtures.root.path.hasSuffix("Tests/Fixtures"))
}
