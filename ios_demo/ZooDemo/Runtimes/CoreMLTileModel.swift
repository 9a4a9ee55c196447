import CoreML
import CoreVideo
import Foundation
import ZooCore

extension ComputeUnitsOption {
    var mlComputeUnits: MLComputeUnits {
        switch self {
        case .all: return .all
        case .cpuOnly: return .cpuOnly
        case .cpuAndGPU: return .cpuAndGPU
        case .cpuAndNeuralEngine: return .cpuAndNeuralEngine
        }
    }

    var label: String {
        switch self {
        case .all: return "All (Core ML chooses)"
        case .cpuOnly: return "CPU only"
        case .cpuAndGPU: return "CPU and GPU"
        case .cpuAndNeuralEngine: return "CPU and Neural Engine"
        }
    }
}

/// A compiled Core ML model (.mlmodelc) run tile by tile. The tensors follow the manifest:
/// MLMultiArray inputs/outputs in the manifest's layout (float32 given; float16 or double
/// outputs read with their strides), or CVPixelBuffer (32BGRA / 32ARGB) when the model declares
/// an image feature (values 0...255 in the buffer, the model's own scale maps them to [0, 1]).
final class CoreMLTileModel: TileModel, @unchecked Sendable {
    let model: MLModel
    let configuration: MLModelConfiguration
    private let inputName: String
    private let outputName: String
    private let inputCodec: TensorCodec
    private let outputCodec: TensorCodec
    private let inputImage: MLImageConstraint?

    init(compiledModelURL: URL, manifest: Manifest, computeUnits: ComputeUnitsOption) throws {
        // Locals first: a class may not read its own properties before all are initialised.
        let configuration = MLModelConfiguration()
        configuration.computeUnits = computeUnits.mlComputeUnits
        let model = try MLModel(contentsOf: compiledModelURL, configuration: configuration)
        let description = model.modelDescription
        let inputName = try CoreMLTileModel.featureName(
            manifest.inputs[0].name, in: description.inputDescriptionsByName, role: "input")
        let outputName = try CoreMLTileModel.featureName(
            manifest.outputs[0].name, in: description.outputDescriptionsByName, role: "output")
        let inputImage: MLImageConstraint?
        switch description.inputDescriptionsByName[inputName]?.type {
        case .multiArray?:
            inputImage = nil
        case .image?:
            inputImage = description.inputDescriptionsByName[inputName]?.imageConstraint
        default:
            throw ZooError("the Core ML input '\(inputName)' is neither a multi-array nor an image",
                           fix: "re-export with `zoo export --target coreml`")
        }
        self.configuration = configuration
        self.model = model
        self.inputName = inputName
        self.outputName = outputName
        self.inputImage = inputImage
        self.inputCodec = try TensorCodec(manifest.inputs[0])
        self.outputCodec = try TensorCodec(manifest.outputs[0])
    }

    /// The manifest's tensor name, or the only feature when the model names it differently.
    private static func featureName(_ name: String, in features: [String: MLFeatureDescription], role: String) throws -> String {
        if features[name] != nil { return name }
        if features.count == 1, let only = features.keys.first { return only }
        throw ZooError("the Core ML model has no \(role) named '\(name)' (it has \(features.keys.sorted().joined(separator: ", ")))",
                       fix: "copy the manifest.json that was exported with this model")
    }

    func run(_ input: [Float]) throws -> [Float] {
        let value: MLFeatureValue
        if let constraint = inputImage {
            value = MLFeatureValue(pixelBuffer: try Self.pixelBuffer(fromNCHW: input, codec: inputCodec, constraint: constraint))
        } else {
            guard case .float(let ordered) = try inputCodec.encode(nchw: input) else {
                throw ZooError("Core ML multi-array inputs are float; the manifest says \(inputCodec.spec.dtype.rawValue)",
                               fix: "re-export with `zoo export --target coreml`")
            }
            value = MLFeatureValue(multiArray: try Self.multiArray(ordered, shape: inputCodec.spec.shape))
        }
        let provider = try MLDictionaryFeatureProvider(dictionary: [inputName: value])
        let prediction = try model.prediction(from: provider)
        guard let output = prediction.featureValue(for: outputName) else {
            throw ZooError("the Core ML model returned no '\(outputName)'")
        }
        if let array = output.multiArrayValue {
            return try outputCodec.decode(.float(Self.floats(array, expectedShape: outputCodec.spec.shape)))
        }
        if let buffer = output.imageBufferValue {
            return try Self.nchw(fromPixelBuffer: buffer, codec: outputCodec)
        }
        throw ZooError("the Core ML output '\(outputName)' is neither a multi-array nor an image")
    }

    // MARK: MLMultiArray

    /// A float32 multi-array of `shape` holding `values` in row-major order of that shape.
    /// (A float16 model input is converted by Core ML.)
    static func multiArray(_ values: [Float], shape: [Int]) throws -> MLMultiArray {
        let array = try MLMultiArray(shape: shape.map { NSNumber(value: $0) }, dataType: .float32)
        let dims = array.shape.map(\.intValue)
        array.withUnsafeMutableBufferPointer(ofType: Float.self) { buffer, strides in
            var index = 0
            for a in 0..<dims[0] {
                for b in 0..<dims[1] {
                    for c in 0..<dims[2] {
                        let base = a * strides[0] + b * strides[1] + c * strides[2]
                        for d in 0..<dims[3] {
                            buffer[base + d * strides[3]] = values[index]
                            index += 1
                        }
                    }
                }
            }
        }
        return array
    }

    /// The values of a 4-D multi-array in row-major order of its shape, honouring its strides
    /// (Core ML may pad rows of outputs computed on the Neural Engine).
    static func floats(_ array: MLMultiArray, expectedShape: [Int]) throws -> [Float] {
        let shape = array.shape.map(\.intValue)
        let strides = array.strides.map(\.intValue)
        guard shape.count == 4, shape.reduce(1, *) == expectedShape.reduce(1, *) else {
            throw ZooError("the Core ML output has shape \(shape), the manifest says \(expectedShape)",
                           fix: "copy the manifest.json that was exported with this model")
        }
        var out = [Float](repeating: 0, count: shape.reduce(1, *))
        func gather(_ element: (Int) -> Float) {
            var index = 0
            for a in 0..<shape[0] {
                for b in 0..<shape[1] {
                    for c in 0..<shape[2] {
                        let base = a * strides[0] + b * strides[1] + c * strides[2]
                        for d in 0..<shape[3] {
                            out[index] = element(base + d * strides[3])
                            index += 1
                        }
                    }
                }
            }
        }
        switch array.dataType {
        case .float32:
            array.withUnsafeBufferPointer(ofType: Float.self) { buffer in gather { buffer[$0] } }
        case .float16:
            array.withUnsafeBytes { raw in gather { halfToFloat(raw.load(fromByteOffset: $0 * 2, as: UInt16.self)) } }
        case .double:
            array.withUnsafeBufferPointer(ofType: Double.self) { buffer in gather { Float(buffer[$0]) } }
        default:
            throw ZooError("the Core ML output has data type \(array.dataType.rawValue); the app reads float16/float32/double")
        }
        return out
    }

    // MARK: CVPixelBuffer (image features)

    static func pixelBuffer(fromNCHW values: [Float], codec: TensorCodec, constraint: MLImageConstraint) throws -> CVPixelBuffer {
        let width = codec.width
        let height = codec.height
        let format = constraint.pixelFormatType
        guard format == kCVPixelFormatType_32BGRA || format == kCVPixelFormatType_32ARGB else {
            throw ZooError("the Core ML image input wants pixel format \(format); the app feeds 32BGRA/32ARGB colour images")
        }
        var created: CVPixelBuffer?
        let attributes = [kCVPixelBufferIOSurfacePropertiesKey: [String: Any]()] as CFDictionary
        guard CVPixelBufferCreate(kCFAllocatorDefault, width, height, format, attributes, &created) == kCVReturnSuccess,
              let buffer = created else {
            throw ZooError("could not allocate a \(width)x\(height) pixel buffer")
        }
        CVPixelBufferLockBaseAddress(buffer, [])
        defer { CVPixelBufferUnlockBaseAddress(buffer, []) }
        guard let base = CVPixelBufferGetBaseAddress(buffer)?.assumingMemoryBound(to: UInt8.self) else {
            throw ZooError("could not write the pixel buffer")
        }
        let rowBytes = CVPixelBufferGetBytesPerRow(buffer)
        let (r, g, b, a) = format == kCVPixelFormatType_32BGRA ? (2, 1, 0, 3) : (1, 2, 3, 0)
        let plane = width * height
        for y in 0..<height {
            for x in 0..<width {
                let pixel = base + y * rowBytes + x * 4
                let index = y * width + x
                pixel[r] = quantizeToByte(values[index])
                pixel[g] = quantizeToByte(values[plane + index])
                pixel[b] = quantizeToByte(values[2 * plane + index])
                pixel[a] = 255
            }
        }
        return buffer
    }

    static func nchw(fromPixelBuffer buffer: CVPixelBuffer, codec: TensorCodec) throws -> [Float] {
        let format = CVPixelBufferGetPixelFormatType(buffer)
        guard format == kCVPixelFormatType_32BGRA || format == kCVPixelFormatType_32ARGB else {
            throw ZooError("the Core ML image output has pixel format \(format); the app reads 32BGRA/32ARGB")
        }
        let width = CVPixelBufferGetWidth(buffer)
        let height = CVPixelBufferGetHeight(buffer)
        guard width == codec.width, height == codec.height else {
            throw ZooError("the Core ML image output is \(width)x\(height), the manifest says \(codec.width)x\(codec.height)")
        }
        CVPixelBufferLockBaseAddress(buffer, .readOnly)
        defer { CVPixelBufferUnlockBaseAddress(buffer, .readOnly) }
        guard let base = CVPixelBufferGetBaseAddress(buffer)?.assumingMemoryBound(to: UInt8.self) else {
            throw ZooError("could not read the pixel buffer")
        }
        let rowBytes = CVPixelBufferGetBytesPerRow(buffer)
        let (r, g, b) = format == kCVPixelFormatType_32BGRA ? (2, 1, 0) : (1, 2, 3)
        let plane = width * height
        var out = [Float](repeating: 0, count: 3 * plane)
        for y in 0..<height {
            for x in 0..<width {
                let pixel = base + y * rowBytes + x * 4
                let index = y * width + x
                out[index] = Float(pixel[r]) / 255
                out[plane + index] = Float(pixel[g]) / 255
                out[2 * plane + index] = Float(pixel[b]) / 255
            }
        }
        return out
    }
}

/// Compiles a .mlpackage copied into Documents (bundled models are compiled by the build), once:
/// the .mlmodelc is kept in Application Support under the package's sha256.
enum CoreMLCompiler {
    static func compiledModel(for package: URL, sha256: String) async throws -> URL {
        let manager = FileManager.default
        let cache = try manager.url(for: .applicationSupportDirectory, in: .userDomainMask, appropriateFor: nil, create: true)
            .appendingPathComponent("CompiledModels", isDirectory: true)
        try manager.createDirectory(at: cache, withIntermediateDirectories: true)
        let target = cache.appendingPathComponent("\(sha256).mlmodelc", isDirectory: true)
        if manager.fileExists(atPath: target.path) {
            return target
        }
        let compiled = try await MLModel.compileModel(at: package)
        do {
            try manager.moveItem(at: compiled, to: target)
        } catch {
            try manager.copyItem(at: compiled, to: target)
        }
        return target
    }

    /// Where Core ML plans to run the operations (iOS 17.4+: MLComputePlan): "ane", "gpu", "cpu"
    /// when all operations prefer one device, else nil, plus a note with the counts.
    static func deviceSummary(compiledModel: URL, configuration: MLModelConfiguration) async -> (device: String?, note: String?) {
        guard #available(iOS 17.4, *) else {
            return (nil, "device placement unknown (MLComputePlan needs iOS 17.4)")
        }
        do {
            let plan = try await MLComputePlan.load(contentsOf: compiledModel, configuration: configuration)
            guard case let .program(program) = plan.modelStructure, let main = program.functions["main"] else {
                return (nil, "device placement unknown (not an ML program)")
            }
            var counts: [String: Int] = [:]
            func visit(_ operations: [MLModelStructure.Program.Operation]) {
                for operation in operations {
                    if let usage = plan.deviceUsage(for: operation) {
                        let device: String
                        switch usage.preferred {
                        case .cpu: device = "cpu"
                        case .gpu: device = "gpu"
                        case .neuralEngine: device = "ane"
                        @unknown default: device = "other"
                        }
                        counts[device, default: 0] += 1
                    }
                    for block in operation.blocks {
                        visit(block.operations)
                    }
                }
            }
            visit(main.block.operations)
            let total = counts.values.reduce(0, +)
            guard total > 0 else { return (nil, "MLComputePlan listed no operations") }
            let listing = counts.sorted { $0.value > $1.value }.map { "\($0.value) on \($0.key)" }.joined(separator: ", ")
            let note = "Core ML compute plan (MLComputePlan): \(listing) of \(total) operations"
            return (counts.count == 1 ? counts.keys.first : nil, note)
        } catch {
            return (nil, "MLComputePlan failed: \(error.localizedDescription)")
        }
    }
}
