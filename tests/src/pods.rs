//! Pods as the simulator admits them: what they ask for and what they were given.

use std::collections::BTreeMap;

use proto::deviceplugin::v1beta1::ContainerAllocateResponse;

/// A pod to admit: its containers and their extended-resource limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSpec {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Containers in order.
    pub containers: Vec<ContainerSpec>,
}

impl PodSpec {
    /// A pod with no containers yet.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            containers: Vec::new(),
        }
    }

    /// Adds a container with `limits` given as `(resource name, count)` pairs.
    pub fn container(mut self, name: impl Into<String>, limits: &[(&str, usize)]) -> Self {
        self.containers.push(ContainerSpec {
            name: name.into(),
            limits: limits.iter().map(|(r, n)| ((*r).to_string(), *n)).collect(),
        });
        self
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// One container of a [`PodSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    /// Container name.
    pub name: String,
    /// `resources.limits` for extended resources: resource name to device count.
    pub limits: BTreeMap<String, usize>,
}

/// What an admitted pod was given.
#[derive(Debug, Clone, PartialEq)]
pub struct PodAllocation {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Per container, in the pod's order.
    pub containers: Vec<ContainerAllocation>,
}

impl PodAllocation {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The allocation of `resource` to `container`, if any.
    pub fn get(&self, container: &str, resource: &str) -> Option<&ResourceAllocation> {
        self.containers
            .iter()
            .find(|c| c.name == container)
            .and_then(|c| c.resources.get(resource))
    }

    /// Every device ID of `resource` held by any container of the pod.
    pub fn device_ids(&self, resource: &str) -> Vec<String> {
        self.containers
            .iter()
            .filter_map(|c| c.resources.get(resource))
            .flat_map(|r| r.device_ids.iter().cloned())
            .collect()
    }
}

/// What one container was given.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerAllocation {
    /// Container name.
    pub name: String,
    /// Per resource name.
    pub resources: BTreeMap<String, ResourceAllocation>,
}

/// One resource's devices for one container, and the plugin's answers.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceAllocation {
    /// The device IDs allocated (sent in `Allocate`).
    pub device_ids: Vec<String>,
    /// What `GetPreferredAllocation` answered, when the plugin offers it.
    pub preferred: Option<Vec<String>>,
    /// The plugin's `Allocate` answer for this container.
    pub response: ContainerAllocateResponse,
}
