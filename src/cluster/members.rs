//! [`MemberTable`]: every broker of the cluster seen so far, by name, with its state. The
//! membership actor writes it; the bridge, the registry (through placement errors) and
//! `stat` read it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::stats::{MemberStat, MemberState};

/// Every broker seen, by name, with its state; shared with the bridge and the registry.
#[derive(Clone, Default)]
pub struct MemberTable(Arc<Mutex<BTreeMap<String, MemberStat>>>);

impl MemberTable {
    pub fn all(&self) -> Vec<MemberStat> {
        self.lock().values().cloned().collect()
    }

    pub fn get(&self, name: &str) -> Option<MemberStat> {
        self.lock().get(name).cloned()
    }

    pub fn is_up(&self, name: &str) -> bool {
        self.get(name).is_some_and(|m| m.state == MemberState::Up)
    }

    pub(super) fn set(&self, member: MemberStat) {
        self.lock().insert(member.name.clone(), member);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, MemberStat>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
