//! What hwloc reports about a node, and optional rank binding.

use crate::config::Binding;
use crate::error::{Error, Result};
use hwlocality::cpu::binding::CpuBindingFlags;
use hwlocality::object::types::ObjectType;
use hwlocality::Topology;

/// A node's cores and memory. The memory checkpoint budget is a fraction of `memory_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeResources {
    /// Physical cores.
    pub cores: u32,
    /// Hardware threads (processing units).
    pub pus: u32,
    /// Total memory in bytes, as hwloc reports it (the sum over NUMA nodes).
    pub memory_bytes: u64,
    /// Physical memory in bytes, as the kernel reports it (`sysconf`). In some virtual machines
    /// this is larger than hwloc's figure, e.g. when memory was hot-plugged outside NUMA nodes.
    pub os_memory_bytes: u64,
}

impl NodeResources {
    /// Asks hwloc about this host.
    pub fn probe() -> Result<NodeResources> {
        let topo =
            Topology::new().map_err(|e| Error::Hwloc(format!("cannot load the topology: {e}")))?;
        let cores = topo.objects_with_type(ObjectType::Core).count() as u32;
        let pus = topo.objects_with_type(ObjectType::PU).count() as u32;
        let os_memory_bytes = crate::sys::physical_memory();
        let mut memory_bytes = topo.root_object().total_memory();
        if memory_bytes == 0 {
            // Some containers hide NUMA memory from hwloc; the kernel still knows.
            memory_bytes = os_memory_bytes;
        }
        Ok(NodeResources {
            cores: cores.max(1),
            pus: pus.max(1),
            memory_bytes,
            os_memory_bytes,
        })
    }
}

/// Binds this process to one core or PU, chosen round robin by its index on the node.
/// Returns a description of the binding, or `None` when binding is off.
pub fn bind_rank(mode: Binding, local_index: usize) -> Result<Option<String>> {
    let ty = match mode {
        Binding::None => return Ok(None),
        Binding::Core => ObjectType::Core,
        Binding::Pu => ObjectType::PU,
    };
    let topo =
        Topology::new().map_err(|e| Error::Hwloc(format!("cannot load the topology: {e}")))?;
    let objs: Vec<_> = topo.objects_with_type(ty).collect();
    if objs.is_empty() {
        return Err(Error::Hwloc(format!("no {ty} objects to bind to")));
    }
    let obj = objs[local_index % objs.len()];
    let set = obj
        .cpuset()
        .ok_or_else(|| Error::Hwloc(format!("{ty} #{} has no cpuset", obj.logical_index())))?;
    topo.bind_cpu(set, CpuBindingFlags::PROCESS).map_err(|e| {
        Error::Hwloc(format!(
            "binding to {ty} #{} failed: {e}",
            obj.logical_index()
        ))
    })?;
    Ok(Some(format!("{ty} #{}", obj.logical_index())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_reports_cores_and_memory() {
        let r = NodeResources::probe().unwrap();
        assert!(r.cores >= 1 && r.pus >= r.cores, "{r:?}");
        assert!(r.memory_bytes > 64 << 20, "{r:?}");
    }
}
