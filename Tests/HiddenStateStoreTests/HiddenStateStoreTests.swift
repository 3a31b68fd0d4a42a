import Testing
import TestSupport
@testable import HiddenStateStore

@Test func HiddenStateStoreBuilds() {
    #expect(Fixtures.root.path.hasSuffix("Tests/Fixtures"))
}
