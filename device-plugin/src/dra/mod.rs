//! The Dynamic Resource Allocation (`resource.k8s.io/v1`) edge, fed by the same
//! inventory -> pools flow as the device-plugin edge.
//!
//! - [`slices`]: pools -> the ResourceSlices of this node (device names, attributes,
//!   128-device chunks of one pool).
//! - [`publish`]: syncing those slices to the API server and removing them on shutdown.

pub mod publish;
pub mod slices;
