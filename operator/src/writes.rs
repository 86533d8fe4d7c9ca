//! What the operator's writers share, kept apart so that the modules that mark work
//! (index, distributor, stream server, realization) and the one that writes it (status) do not
//! import each other: the server-side-apply field manager, and the set of policies whose status
//! must be written again.

use std::collections::BTreeSet;
use std::sync::Mutex;

use palisade_engine::model::PolicyRef;

/// The field manager of every status write, so `managedFields` shows who wrote what.
pub const FIELD_MANAGER: &str = "palisade-operator";

/// Policies whose status may have changed, marked by the index, the distributor and the
/// stream server, taken by the status writer.
#[derive(Default)]
pub struct DirtyPolicies {
    set: Mutex<BTreeSet<PolicyRef>>,
}

impl DirtyPolicies {
    pub fn mark(&self, policies: impl IntoIterator<Item = PolicyRef>) {
        self.lock().extend(policies);
    }

    pub fn take(&self) -> BTreeSet<PolicyRef> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<PolicyRef>> {
        self.set.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
