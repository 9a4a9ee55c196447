// Plugin versions for all modules. Kotlin 2.1.0 is the compiler the core module is tested with
// (tests/test_android_core.py); AGP 8.7 supports Kotlin 2.1 and compileSdk 35 (Gradle 8.9+).
plugins {
    id("com.android.application") version "8.7.3" apply false
    id("org.jetbrains.kotlin.android") version "2.1.0" apply false
    id("org.jetbrains.kotlin.jvm") version "2.1.0" apply false
}
