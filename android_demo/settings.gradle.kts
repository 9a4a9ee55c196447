// Android Studio / Gradle project of the restoration zoo's Android demo (docs/android.md).
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google() // LiteRT (com.google.ai.edge.litert), AndroidX
        mavenCentral() // ExecuTorch (org.pytorch:executorch-android), Kotlin
    }
}

rootProject.name = "restoration-zoo-android"
include(":core", ":app")
