package org.restorationzoo.core

import java.io.File

/**
 * The CPU line of a results record's host from /proc/cpuinfo, e.g.
 * "1x Cortex-X3 + 4x Cortex-A715 + 4x Cortex-A510" (Arm cores by their "CPU part" numbers,
 * largest cluster type first as the kernel lists little cores first). Null when unknown.
 */
object CpuInfo {
    private val ARM_PARTS = mapOf(
        0xd03 to "Cortex-A53", 0xd04 to "Cortex-A35", 0xd05 to "Cortex-A55", 0xd07 to "Cortex-A57",
        0xd08 to "Cortex-A72", 0xd09 to "Cortex-A73", 0xd0a to "Cortex-A75", 0xd0b to "Cortex-A76",
        0xd0d to "Cortex-A77", 0xd41 to "Cortex-A78", 0xd44 to "Cortex-X1", 0xd46 to "Cortex-A510",
        0xd47 to "Cortex-A710", 0xd48 to "Cortex-X2", 0xd4d to "Cortex-A715", 0xd4e to "Cortex-X3",
        0xd80 to "Cortex-A520", 0xd81 to "Cortex-A720", 0xd82 to "Cortex-X4", 0xd85 to "Cortex-X925",
        0xd87 to "Cortex-A725",
    )

    fun describe(cpuinfo: String): String? {
        val parts = cpuinfo.lines()
            .filter { it.trim().startsWith("CPU part") }
            .mapNotNull { line -> line.substringAfter(':').trim().removePrefix("0x").toIntOrNull(16) }
        if (parts.isEmpty()) {
            return cpuinfo.lines().firstOrNull { it.startsWith("model name") || it.startsWith("Hardware") }
                ?.substringAfter(':')?.trim()?.ifEmpty { null }
        }
        val counts = LinkedHashMap<Int, Int>()
        for (part in parts) counts[part] = (counts[part] ?: 0) + 1
        return counts.entries.reversed().joinToString(" + ") { (part, count) ->
            "${count}x ${ARM_PARTS[part] ?: "Arm part 0x%03x".format(part)}"
        }
    }

    fun describeThisDevice(): String? = try {
        describe(File("/proc/cpuinfo").readText())
    } catch (err: Exception) {
        null
    }
}
