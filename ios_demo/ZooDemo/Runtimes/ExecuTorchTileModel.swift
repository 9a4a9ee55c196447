import Foundation
import ZooCore

/// The ExecuTorch runtime version the app is built against: the `swiftpm-<version>` branch of
/// https://github.com/pytorch/executorch in project.yml (keep the two in sync; it is written to
/// the results file as runtime.version).
enum ExecuTorchRuntimeInfo {
    static let version = "1.5.1"
}

#if canImport(ExecuTorch)
import ExecuTorch

/// A .pte program run tile by tile through ExecuTorch's Swift API (`Module`, `Tensor<Float>`;
/// see docs/ios.md for the API this follows). The zoo's .pte files take and return float32
/// NCHW in [0, 1] (quantize/dequantize are inside the program), whatever the delegate
/// (XnnpackBackend on the CPU, CoreMLBackend on ANE/GPU/CPU).
///
/// `Module` is not thread-safe: one instance is used by one task at a time.
final class ExecuTorchTileModel: TileModel, @unchecked Sendable {
    private let module: Module
    private let inputShape: [Int]
    private let outputCount: Int

    init(programURL: URL, manifest: Manifest) throws {
        let input = manifest.inputs[0]
        let output = manifest.outputs[0]
        guard input.dtype == .float32, input.layout == .nchw, output.dtype == .float32, output.layout == .nchw else {
            throw ZooError("this .pte takes \(input.dtype.rawValue) \(input.layout.rawValue); the app feeds the zoo's float32 NCHW programs",
                           fix: "re-export with `zoo export --target executorch-xnnpack`")
        }
        let module = Module(filePath: programURL.path)
        // Loads the program and prepares "forward" (delegate initialisation happens here, so
        // the first timed run does not pay for it).
        try module.load("forward")
        self.module = module
        self.inputShape = input.shape
        self.outputCount = output.shape.reduce(1, *)
    }

    func run(_ input: [Float]) throws -> [Float] {
        let tensor = Tensor<Float>(input, shape: inputShape)
        let output: Tensor<Float> = try module.forward(tensor)
        let values = output.scalars()
        guard values.count == outputCount else {
            throw ZooError("the .pte returned \(values.count) values, the manifest's output shape has \(outputCount)",
                           fix: "copy the manifest.json that was exported with this program")
        }
        return values
    }
}
#endif
