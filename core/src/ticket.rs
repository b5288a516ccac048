//! Flight tickets that name one output partition of one producer task, signed so that
//! only tickets the cluster handed out read anything.
//!
//! A ticket is the encoded [`ShuffleTicket`] followed by an HMAC-SHA256 of it under the
//! cluster's [`TicketKey`]. Executors refuse a ticket whose tag does not match: a guessed,
//! altered or replayed-from-another-cluster ticket reads nothing.

use std::sync::Arc;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use parking_lot::RwLock;
use prost::Message;
use sha2::Sha256;

use crate::error::{QuiverError, Result};
use crate::proto::ShuffleTicket;

type HmacSha256 = Hmac<Sha256>;

/// Length of the tag that ends every signed ticket.
const TAG_BYTES: usize = 32;

/// The secret that signs tickets; every executor of a cluster learns it when it registers.
#[derive(Clone, PartialEq, Eq)]
pub struct TicketKey(Arc<[u8]>);

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketKey(..)")
    }
}

impl TicketKey {
    /// A fresh random key.
    pub fn random() -> Self {
        let bytes: [u8; 32] = rand::random();
        Self(Arc::from(bytes.as_slice()))
    }

    /// A key derived from a cluster secret: stable across scheduler restarts.
    pub fn derive(cluster_secret: &str) -> Self {
        let mut mac = new_mac(b"quiver ticket key v1");
        mac.update(cluster_secret.as_bytes());
        Self(Arc::from(mac.finalize().into_bytes().as_slice()))
    }

    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(Arc::from(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn tag(&self, payload: &[u8]) -> HmacSha256 {
        let mut mac = new_mac(&self.0);
        mac.update(payload);
        mac
    }
}

fn new_mac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length.
    <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// A [`TicketKey`] that can be replaced when the executor registers with a new scheduler.
#[derive(Debug, Clone)]
pub struct SharedTicketKey(Arc<RwLock<TicketKey>>);

impl SharedTicketKey {
    pub fn new(key: TicketKey) -> Self {
        Self(Arc::new(RwLock::new(key)))
    }

    pub fn get(&self) -> TicketKey {
        self.0.read().clone()
    }

    pub fn set(&self, key: TicketKey) {
        *self.0.write() = key;
    }
}

/// Encodes and signs a shuffle/result ticket for Flight `do_get`.
pub fn encode_ticket(ticket: &ShuffleTicket, key: &TicketKey) -> bytes::Bytes {
    let mut bytes = ticket.encode_to_vec();
    let tag = key.tag(&bytes).finalize().into_bytes();
    bytes.extend_from_slice(&tag);
    bytes::Bytes::from(bytes)
}

/// Checks the signature of a ticket made by [`encode_ticket`] and decodes it.
/// Whether `ticket` is a client's, for a query's result: the scheduler gives result
/// tickets an expiry (the result's retention); executors' shuffle tickets carry none.
pub fn is_result_ticket(ticket: &ShuffleTicket) -> bool {
    ticket.expires_at_ms != 0
}

pub fn decode_ticket(bytes: &[u8], key: &TicketKey) -> Result<ShuffleTicket> {
    if bytes.len() < TAG_BYTES {
        return Err(QuiverError::ForgedTicket);
    }
    let (payload, tag) = bytes.split_at(bytes.len() - TAG_BYTES);
    key.tag(payload)
        .verify_slice(tag)
        .map_err(|_| QuiverError::ForgedTicket)?;
    let ticket = ShuffleTicket::decode(payload).map_err(|source| QuiverError::BadTicket {
        reason: source.to_string(),
    })?;
    let now = now_ms();
    if is_result_ticket(&ticket) && now > ticket.expires_at_ms {
        return Err(QuiverError::ExpiredTicket {
            secs_ago: (now - ticket.expires_at_ms) / 1000,
        });
    }
    Ok(ticket)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// A random secret for tokens and generated cluster secrets, as URL-safe text.
pub fn random_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket() -> ShuffleTicket {
        ShuffleTicket {
            job_id: "job-1".to_string(),
            stage_id: 2,
            map_partition: 3,
            output_partition: 0,
            expires_at_ms: 0,
        }
    }

    #[test]
    fn signed_ticket_round_trips() {
        let key = TicketKey::random();
        let decoded = decode_ticket(&encode_ticket(&ticket(), &key), &key).unwrap();
        assert_eq!(decoded, ticket());
    }

    #[test]
    fn altered_or_foreign_tickets_are_refused() {
        let key = TicketKey::random();
        let mut bytes = encode_ticket(&ticket(), &key).to_vec();
        bytes[1] ^= 1;
        assert!(matches!(
            decode_ticket(&bytes, &key),
            Err(QuiverError::ForgedTicket)
        ));
        let other = encode_ticket(&ticket(), &TicketKey::random());
        assert!(matches!(
            decode_ticket(&other, &key),
            Err(QuiverError::ForgedTicket)
        ));
        let unsigned = ticket().encode_to_vec();
        assert!(decode_ticket(&unsigned, &key).is_err());
    }

    #[test]
    fn tickets_past_their_expiry_read_nothing() {
        let key = TicketKey::random();
        let expired = ShuffleTicket {
            expires_at_ms: now_ms() - 5_000,
            ..ticket()
        };
        let refused = decode_ticket(&encode_ticket(&expired, &key), &key).unwrap_err();
        assert!(
            matches!(refused, QuiverError::ExpiredTicket { secs_ago: 4..=6 }),
            "{refused}"
        );
        let live = ShuffleTicket {
            expires_at_ms: now_ms() + 60_000,
            ..ticket()
        };
        assert!(decode_ticket(&encode_ticket(&live, &key), &key).is_ok());
    }

    #[test]
    fn derived_keys_are_stable_per_secret() {
        assert_eq!(TicketKey::derive("a"), TicketKey::derive("a"));
        assert_ne!(TicketKey::derive("a"), TicketKey::derive("b"));
    }
}
