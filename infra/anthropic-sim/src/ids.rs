//! Identifiers in Anthropic's shapes. Audit event ids sort in the order events became visible.

use std::sync::atomic::{AtomicU64, Ordering};

use rand::Rng;

const CROCKFORD: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

static SEQ: AtomicU64 = AtomicU64::new(1);

fn random(alphabet: &[u8], n: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
        .collect()
}

/// `req_011CSHoEeqs5C35K2UUqR7Fy`
pub fn request_id() -> String {
    format!("req_011{}", random(BASE62, 21))
}

pub fn skill_id() -> String {
    format!("skill_01{}", random(BASE62, 24))
}

pub fn workspace_id() -> String {
    format!("wrkspc_01{}", random(BASE62, 22))
}

pub fn user_id() -> String {
    format!("user_01{}", random(BASE62, 22))
}

/// Monotonic, lexicographically ordered: 26 Crockford characters of a global sequence number.
pub fn audit_event_id() -> String {
    let mut n = SEQ.fetch_add(1, Ordering::Relaxed);
    let mut buf = [b'0'; 26];
    for slot in buf.iter_mut().rev() {
        *slot = CROCKFORD[(n % 32) as usize];
        n /= 32;
    }
    format!("auditevt_{}", String::from_utf8_lossy(&buf))
}

pub fn api_key_id() -> String {
    format!("apikey_01{}", random(BASE62, 22))
}

pub fn plugin_id() -> String {
    format!("plugin_01{}", random(BASE62, 22))
}

pub fn plugin_version_id() -> String {
    format!("pluginver_01{}", random(BASE62, 22))
}

pub fn rbac_group_id() -> String {
    format!("rbac_group_01{}", random(BASE62, 22))
}

/// Compliance activity ids: monotonic, so their order is the order the activities happened.
pub fn activity_id() -> String {
    format!("activity_{:020}", SEQ.fetch_add(1, Ordering::Relaxed))
}

pub fn org_id() -> String {
    let mut rng = rand::thread_rng();
    let hex: String = (0..32)
        .map(|_| char::from_digit(rng.gen_range(0..16), 16).unwrap_or('0'))
        .collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn audit_ids_sort_in_creation_order() {
        let ids: Vec<String> = (0..1000).map(|_| super::audit_event_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }
}
