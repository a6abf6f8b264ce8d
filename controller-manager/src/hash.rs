//! The hash that names a pod template's revision (`pod-template-hash`,
//! `controller-revision-hash`): FNV-1a over the template's JSON with the collision count mixed
//! in, stable across builds (unlike std's hasher), its decimal digits spelt in upstream's
//! alphabet of consonants and digits so a name never spells a word.

use serde::Serialize;

pub fn template_hash(template: &impl Serialize, collision_count: Option<i32>) -> String {
    let mut bytes = serde_json::to_vec(template).unwrap_or_default();
    if let Some(c) = collision_count {
        bytes.extend_from_slice(&c.to_le_bytes());
    }
    let h = bytes.iter().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193));
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string().bytes().map(|d| ALPHABET[usize::from(d) % ALPHABET.len()] as char).collect()
}
