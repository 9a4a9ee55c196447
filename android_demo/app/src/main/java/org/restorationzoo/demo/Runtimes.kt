package org.restorationzoo.demo

import java.io.File
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.channels.FileChannel
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor
import org.restorationzoo.core.LoadedModel
import org.restorationzoo.core.Manifest
import org.restorationzoo.core.RuntimeInfo
import org.restorationzoo.core.RuntimeKind
import org.restorationzoo.core.TensorCodec
import org.restorationzoo.core.TensorData
import org.tensorflow.lite.Interpreter

/** Opens a verified artifact with the runtime its manifest's target needs. */
object Runtimes {
    /** LiteRT CPU threads unless the caller says otherwise. */
    const val DEFAULT_THREADS = 4

    fun load(manifest: Manifest, artifact: File, threads: Int = DEFAULT_THREADS): LoadedModel =
        when (RuntimeKind.forManifest(manifest)) {
            RuntimeKind.EXECUTORCH -> ExecuTorchModel(manifest, artifact)
            RuntimeKind.LITERT -> LiteRtModel(manifest, artifact, threads.coerceAtLeast(1))
        }

    /** A hint when the artifact was exported by a newer ExecuTorch than the app bundles. */
    internal fun executorchVersionHint(manifest: Manifest): String {
        val exported = manifest.tools["executorch"] ?: return ""
        val bundled = BuildConfig.EXECUTORCH_VERSION
        return if (exported.substringBefore('+') != bundled) {
            " (the artifact was exported with executorch $exported, the app bundles executorch-android $bundled: " +
                "build the app with -PexecutorchVersion=${exported.substringBefore('+')})"
        } else {
            ""
        }
    }
}

/** ExecuTorch (org.pytorch:executorch-android): Module.load + forward(EValue(Tensor.fromBlob)). */
class ExecuTorchModel(private val manifest: Manifest, artifact: File) : LoadedModel {
    private val inputCodec = TensorCodec(manifest.input)
    private val outputCodec = TensorCodec(manifest.output)
    private val inputShape = manifest.input.shape.map { it.toLong() }.toLongArray()
    private val module: Module = Module.load(artifact.absolutePath, Module.LOAD_MODE_MMAP)

    init {
        val status = module.loadMethod("forward")
        if (status != 0) {
            module.destroy()
            throw IllegalStateException(
                "ExecuTorch could not load forward() of ${artifact.name} (error 0x${Integer.toHexString(status)})" +
                    Runtimes.executorchVersionHint(manifest),
            )
        }
    }

    override val runtime = RuntimeInfo(
        name = "executorch",
        version = BuildConfig.EXECUTORCH_VERSION,
        delegate = manifest.backend.delegate,
        device = "cpu",
        precision = manifest.precision,
        threads = null, // the AAR's default thread pool (one thread per performance core)
        options = mapOf("aar" to "org.pytorch:executorch-android:${BuildConfig.EXECUTORCH_VERSION}", "load_mode" to "mmap"),
    )

    override fun run(input: FloatArray): FloatArray {
        val tensor = when (val data = inputCodec.encode(input)) {
            is TensorData.Floats -> Tensor.fromBlob(data.values, inputShape)
            is TensorData.Bytes ->
                if (manifest.input.dtype == "uint8") Tensor.fromBlobUnsigned(data.values, inputShape)
                else Tensor.fromBlob(data.values, inputShape)
        }
        val outputs = module.forward(EValue.from(tensor))
        if (outputs.isEmpty()) throw IllegalStateException("ExecuTorch forward() returned nothing" + Runtimes.executorchVersionHint(manifest))
        val out = outputs[0].toTensor()
        val data = when (manifest.output.dtype) {
            "int8" -> TensorData.Bytes(out.getDataAsByteArray())
            "uint8" -> TensorData.Bytes(out.getDataAsUnsignedByteArray())
            else -> TensorData.Floats(out.getDataAsFloatArray())
        }
        return outputCodec.decode(data)
    }

    override fun close() = module.destroy()
}

/** LiteRT (com.google.ai.edge.litert:litert): Interpreter on the CPU with XNNPACK. */
class LiteRtModel(private val manifest: Manifest, artifact: File, private val threads: Int) : LoadedModel {
    private val interpreter: Interpreter
    private val inputCodec = TensorCodec(manifest.input)
    private val outputCodec = TensorCodec(manifest.output)
    private val inputBuffer: ByteBuffer
    private val outputBuffer: ByteBuffer

    init {
        val model = FileInputStream(artifact).use { stream ->
            stream.channel.map(FileChannel.MapMode.READ_ONLY, 0, stream.channel.size())
        }
        val options = Interpreter.Options().setNumThreads(threads).setUseXNNPACK(true)
        interpreter = Interpreter(model, options)
        val inputShape = interpreter.getInputTensor(0).shape().toList()
        val outputShape = interpreter.getOutputTensor(0).shape().toList()
        if (inputShape != manifest.input.shape || outputShape != manifest.output.shape) {
            interpreter.close()
            throw IllegalStateException(
                "${artifact.name}: the model's tensors are $inputShape -> $outputShape but the manifest says " +
                    "${manifest.input.shape} -> ${manifest.output.shape}; re-export it with `zoo export`",
            )
        }
        inputBuffer = ByteBuffer.allocateDirect(interpreter.getInputTensor(0).numBytes()).order(ByteOrder.nativeOrder())
        outputBuffer = ByteBuffer.allocateDirect(interpreter.getOutputTensor(0).numBytes()).order(ByteOrder.nativeOrder())
    }

    override val runtime = RuntimeInfo(
        name = "litert",
        version = BuildConfig.LITERT_VERSION,
        delegate = "xnnpack",
        device = "cpu",
        precision = manifest.precision,
        threads = threads,
        options = mapOf("api" to "Interpreter", "use_xnnpack" to true),
    )

    override fun run(input: FloatArray): FloatArray {
        inputBuffer.clear()
        when (val data = inputCodec.encode(input)) {
            is TensorData.Floats -> inputBuffer.asFloatBuffer().put(data.values)
            is TensorData.Bytes -> inputBuffer.put(data.values)
        }
        inputBuffer.rewind()
        outputBuffer.clear()
        interpreter.run(inputBuffer, outputBuffer)
        outputBuffer.rewind()
        val count = manifest.output.elementCount
        val data = if (manifest.output.isQuantized) {
            TensorData.Bytes(ByteArray(count).also { outputBuffer.get(it) })
        } else {
            TensorData.Floats(FloatArray(count).also { outputBuffer.asFloatBuffer().get(it) })
        }
        return outputCodec.decode(data)
    }

    override fun close() = interpreter.close()
}
