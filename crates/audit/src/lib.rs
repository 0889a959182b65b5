//! The IP audit history: who had an address, and when. Every allocation and release of a node's
//! addresses is an event; events are kept in an append-only, CRC-framed node log
//! (`<dataDir>/<network>/audit/events.log`) and answered as intervals (`audit who`, `history`,
//! `export`).
//!
//! Durable no later than the change, with no fsync of its own on ADD: an allocation's record in
//! the node store *is* its event until the log holds it; a release leaves a small pending file in
//! the same durable write that removes the record (the journal hook, [`AuditJournal`]). [`collect`]
//! moves both into the log later (podnetd, or any `audit` query), so ADD never waits on the log.

mod event;
mod journal;
mod log;
mod query;
mod ship;

pub use event::{AuditEvent, EventKind, Interval};
pub use journal::{note_withdrawn, AuditJournal};
pub use log::{append_events, audit_dir, collect, events, events_of, CollectReport};
pub use query::{intervals, parse_time, who, Filter};
pub use ship::{cluster_events, ship, ShipReport};
