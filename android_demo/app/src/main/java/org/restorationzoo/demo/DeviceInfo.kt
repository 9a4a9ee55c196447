package org.restorationzoo.demo

import android.content.Context
import android.content.Intent
import android.content.IntentFilter
import android.content.res.Configuration
import android.os.BatteryManager
import android.os.Build
import org.restorationzoo.core.CpuInfo
import org.restorationzoo.core.HostInfo

/** The `host` of a results record, from android.os.Build and /proc/cpuinfo. */
object DeviceInfo {
    fun host(context: Context): HostInfo {
        val tablet = (context.resources.configuration.screenLayout and Configuration.SCREENLAYOUT_SIZE_MASK) >=
            Configuration.SCREENLAYOUT_SIZE_LARGE
        val soc = if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.S && Build.SOC_MODEL != Build.UNKNOWN) {
            listOf(Build.SOC_MANUFACTURER, Build.SOC_MODEL).filter { it != Build.UNKNOWN }.joinToString(" ")
        } else {
            Build.HARDWARE
        }
        return HostInfo(
            name = Build.MODEL,
            kind = if (tablet) "tablet" else "phone",
            os = "Android",
            osVersion = "${Build.VERSION.RELEASE} (API ${Build.VERSION.SDK_INT})",
            cpu = CpuInfo.describeThisDevice(),
            cores = Runtime.getRuntime().availableProcessors(),
            gpu = null,
            soc = soc,
        )
    }

    /** "battery 81 %, 31.0 C" for the record's notes (thermal state affects latency). */
    fun batteryNote(context: Context): String? {
        val status = context.registerReceiver(null, IntentFilter(Intent.ACTION_BATTERY_CHANGED)) ?: return null
        val level = status.getIntExtra(BatteryManager.EXTRA_LEVEL, -1)
        val scale = status.getIntExtra(BatteryManager.EXTRA_SCALE, -1)
        val temperature = status.getIntExtra(BatteryManager.EXTRA_TEMPERATURE, Int.MIN_VALUE)
        val parts = ArrayList<String>()
        if (level >= 0 && scale > 0) parts.add("battery ${level * 100 / scale} %")
        if (temperature != Int.MIN_VALUE) parts.add("%.1f C".format(temperature / 10.0))
        return if (parts.isEmpty()) null else parts.joinToString(", ")
    }
}
