import Testing
import TestSupport
@testable import CLIPImage

@Test func CLIPImageBuilds() {
    #expect(Fixtures.root.path.hasSuffix("Tests/Fixtures"))
}
