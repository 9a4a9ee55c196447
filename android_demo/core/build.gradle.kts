// Plain Kotlin/JVM module, no Android dependency: manifest, tile plan, tiler, benchmark, JSON.
// Its tests are a plain main() (src/test/kotlin/.../CoreTests.kt) so they also run without
// Gradle: tests/test_android_core.py compiles this module with kotlinc and checks it against
// the Python reference.
import org.jetbrains.kotlin.gradle.dsl.JvmTarget

plugins {
    id("org.jetbrains.kotlin.jvm")
}

java {
    sourceCompatibility = JavaVersion.VERSION_17
    targetCompatibility = JavaVersion.VERSION_17
}

kotlin {
    compilerOptions {
        jvmTarget.set(JvmTarget.JVM_17)
    }
}

// ./gradlew :core:runCoreTests runs the self-test (the Python test runs the rest).
val runCoreTests by tasks.registering(JavaExec::class) {
    group = "verification"
    description = "Runs the core module's self-test (CoreTests.kt selftest)."
    classpath = sourceSets["test"].runtimeClasspath
    mainClass.set("org.restorationzoo.core.CoreTestsKt")
    args("selftest")
}

tasks.named("check") {
    dependsOn(runCoreTests)
}
