//! Kubelet gRPC APIs (filled in by the device-plugin issue).
