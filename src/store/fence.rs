//! [`Fence`]: what lets a store write only while its broker may. A master/slave broker's
//! lock (the `ha` module, above this one) implements it; a lone broker's journal is [`Unfenced`].
//!
//! The journal asks the fence before every write (and before it answers one: a write that
//! was fenced while it was being fsynced is not confirmed), starts each segment with the
//! fence's epoch, and refuses to open a journal that holds a segment of a newer epoch: a
//! broker that lost its lock cannot append behind the back of the one that took over.

/// Whether this broker may still write, and the epoch it writes in.
pub trait Fence: Send + Sync + 'static {
    /// The epoch this broker writes in (segments it starts carry it).
    fn epoch(&self) -> u64;
    /// `Ok` while this broker may write; why not otherwise. Called before every group of
    /// writes, so it must be cheap (an atomic, a `stat`).
    fn check(&self) -> Result<(), String>;
    /// The store starts (`true`) or ends (`false`) a write and its fsync, so that whoever
    /// keeps the fence can see a write that stalls.
    fn writing(&self, _busy: bool) {}
}

/// The fence of a broker without a standby: never closes.
pub struct Unfenced(pub u64);

impl Fence for Unfenced {
    fn epoch(&self) -> u64 {
        self.0
    }

    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}
