import Testing
import TestSupport
@testable import NegationData

@Test func NegationDataBuilds() {
    #expect(Fixtures.root.path.hasSuffix("Tests/Fixtures"))
}
