import Testing
import TestSupport
@testable import SafeTensors

@Test func SafeTensorsBuilds() {
    #expect(Fixtures.root.path.hasSuffix("Tests/Fixtures"))
}
