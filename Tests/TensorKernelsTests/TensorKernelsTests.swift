import Testing
import TestSupport
@testable import TensorKernels

@Test func TensorKernelsBuilds() {
    #expect(Fixtures.root.path.hasSuffix("Tests/Fixtures"))
}
