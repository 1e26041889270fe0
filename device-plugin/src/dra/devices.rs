//! The DRA devices of this node: every device of every VF pool, under its
//! [`super::device_name`]. Shared HCA resources have no DRA devices (nothing is handed
//! out one by one there). The config's selectors still decide which VFs are offered.

use crate::pools::{PoolDevice, Pools, Resource, ResourceDevices};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One DRA device: the VF pool it is in and its PCI address there.
#[derive(Debug, Clone)]
pub struct DraDevice {
    /// The resource (VF pool) the device belongs to.
    pub resource: Arc<Resource>,
    /// Its PCI address (key of the pool's device map).
    pub pci: String,
}

impl DraDevice {
    /// The pool device itself.
    pub fn device(&self) -> Option<&PoolDevice> {
        match &self.resource.devices {
            ResourceDevices::Pool(d) => d.get(&self.pci),
            ResourceDevices::Shared(_) => None,
        }
    }
}

/// The devices by DRA device name.
#[derive(Debug, Clone, Default)]
pub struct DraDevices {
    by_name: BTreeMap<String, DraDevice>,
}

impl DraDevices {
    /// The DRA devices of `pools`.
    pub fn from_pools(pools: &Pools) -> Self {
        Self::from_resources(pools.resources.iter().cloned().map(Arc::new))
    }

    /// The DRA devices of `resources` (shared as they are served).
    pub fn from_resources(resources: impl IntoIterator<Item = Arc<Resource>>) -> Self {
        let mut by_name = BTreeMap::new();
        for r in resources {
            if let ResourceDevices::Pool(devs) = &r.devices {
                for pci in devs.keys() {
                    by_name.insert(
                        super::device_name(pci),
                        DraDevice {
                            resource: r.clone(),
                            pci: pci.clone(),
                        },
                    );
                }
            }
        }
        DraDevices { by_name }
    }

    /// The device called `name`.
    pub fn get(&self, name: &str) -> Option<&DraDevice> {
        self.by_name.get(name)
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Device names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}
