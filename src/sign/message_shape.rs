//! Owns: saying IN WORDS why a signature blob is not a signed message, when
//! sequoia's message grammar rejects it. sequoia reports a parser error in
//! terms of its grammar's tokens ("Unrecognized token `Pop` found at 3:3
//! Expected one of SIG"), whatever lalrpop variant it is (unrecognized
//! token, unexpected end, extra token) or an unexpected packet; those
//! types are private to sequoia, so instead of translating its text this
//! module lists the blob's packets itself and names what is wrong with the
//! sequence a container signature must have: one-pass signature(s),
//! literal data, the matching signature(s) (optionally inside one
//! compressed data packet). Pure.
use sequoia_openpgp as openpgp;

use openpgp::packet::Tag;
use openpgp::parse::{PacketParser, PacketParserResult, Parse};

/// What a packet sequence is missing or has too much of, in words; `None`
/// when the sequence has a signed message's shape (the fault is then
/// elsewhere and sequoia's own words are kept).
pub fn describe(blob: &[u8]) -> Option<String> {
    let packets = match top_level_tags(blob) {
        Ok(tags) => tags,
        Err(reason) => return Some(reason.to_string()),
    };
    describe_sequence(&packets)
}

/// Why the packets of a file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum UnreadablePackets {
    #[error("truncated or corrupt packet: {0}")]
    AtStart(anyhow::Error),
    #[error("a {tag} packet that cannot be read ({error}): the file is truncated or corrupt")]
    Unknown { tag: Tag, error: String },
    #[error("truncated or corrupt packet after {tag}: {error}")]
    After { tag: Tag, error: anyhow::Error },
}

/// The tags of the message's packets, the content of one compressed data
/// packet taking its place; an error in words when the packets themselves
/// cannot be read.
fn top_level_tags(blob: &[u8]) -> Result<Vec<Tag>, UnreadablePackets> {
    let mut tags = Vec::new();
    let mut ppr = PacketParser::from_bytes(blob).map_err(UnreadablePackets::AtStart)?;
    while let PacketParserResult::Some(pp) = ppr {
        let tag = pp.packet.tag();
        if tag != Tag::CompressedData && tag != Tag::Marker && tag != Tag::Padding {
            tags.push(tag);
        }
        if let openpgp::Packet::Unknown(u) = &pp.packet {
            return Err(UnreadablePackets::Unknown {
                tag,
                error: u.error().to_string(),
            });
        }
        ppr = match pp.recurse() {
            Ok((_, next)) => next,
            Err(error) => return Err(UnreadablePackets::After { tag, error }),
        };
    }
    Ok(tags)
}

/// Checks `one-pass signature+ , literal data , signature+` (counts equal).
fn describe_sequence(tags: &[Tag]) -> Option<String> {
    let encrypted = [
        Tag::PKESK,
        Tag::SKESK,
        Tag::SEIP,
        Tag::SED,
        Tag::AED,
        Tag::MDC,
    ];
    if tags.is_empty() {
        return Some("no OpenPGP packets in the file".into());
    }
    if tags.iter().any(|t| encrypted.contains(t)) {
        return Some(
            "holds encryption packets: a signature is a signed, unencrypted message".into(),
        );
    }
    let literals = tags.iter().filter(|t| **t == Tag::Literal).count();
    let Some(literal_at) = tags.iter().position(|t| *t == Tag::Literal) else {
        return Some(format!(
            "no signed data: the file holds {} but no literal data packet",
            list(tags)
        ));
    };
    if literals > 1 {
        return Some(format!(
            "{literals} literal data packets (two messages in one file?): a signature holds exactly one"
        ));
    }
    let (before, after) = (&tags[..literal_at], &tags[literal_at + 1..]);
    let one_pass = before.iter().filter(|t| **t == Tag::OnePassSig).count();
    let signatures = after.iter().filter(|t| **t == Tag::Signature).count();
    if let Some(stray) = before.iter().find(|t| **t != Tag::OnePassSig) {
        return Some(format!(
            "a {stray} packet before the signed data, where only one-pass signature packets may be"
        ));
    }
    if let Some(stray) = after.iter().find(|t| **t != Tag::Signature) {
        return Some(format!(
            "a {stray} packet after the signed data, where only signature packets may be"
        ));
    }
    match (one_pass, signatures) {
        (0, _) => Some(
            "no one-pass signature before the signed data (an old-style signed message: sign with gpg --sign)"
                .into(),
        ),
        (_, 0) => Some("truncated: no signature after the signed data".into()),
        (p, s) if s < p => Some(format!(
            "truncated: {p} signatures announced before the signed data, only {s} after it"
        )),
        (p, s) if s > p => Some(format!(
            "{s} signatures after the signed data, only {p} announced before it"
        )),
        _ => None,
    }
}

fn list(tags: &[Tag]) -> String {
    let names: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use openpgp::cert::CertBuilder;
    use openpgp::policy::StandardPolicy;
    use openpgp::serialize::stream::{LiteralWriter, Message, Signer};
    use openpgp::serialize::Serialize;
    use openpgp::PacketPile;

    /// A real signed message (one-pass signature, literal data, signature).
    fn signed_message() -> Vec<u8> {
        let (cert, _) = CertBuilder::general_purpose(Some("t@example.org"))
            .generate()
            .unwrap();
        let policy = StandardPolicy::new();
        let key = cert
            .keys()
            .with_policy(&policy, None)
            .for_signing()
            .secret()
            .next()
            .unwrap()
            .key()
            .clone()
            .into_keypair()
            .unwrap();
        let mut out = Vec::new();
        let message = Message::new(&mut out);
        let signer = Signer::new(message, key).unwrap().build().unwrap();
        let mut literal = LiteralWriter::new(signer).build().unwrap();
        std::io::Write::write_all(&mut literal, b"{}").unwrap();
        literal.finalize().unwrap();
        out
    }

    /// `blob`'s top-level packets `keep` (by index), serialized again.
    fn only(blob: &[u8], keep: &[usize]) -> Vec<u8> {
        let pile = PacketPile::from_bytes(blob).unwrap();
        let packets: Vec<_> = pile.into_children().collect();
        let mut out = Vec::new();
        for i in keep {
            packets[*i].serialize(&mut out).unwrap();
        }
        out
    }

    #[test]
    fn a_whole_message_has_the_right_shape() {
        assert_eq!(describe(&signed_message()), None);
    }

    #[test]
    fn every_wrong_shape_is_said_in_words() {
        let blob = signed_message();
        let said = |keep: &[usize]| describe(&only(&blob, keep)).unwrap();
        assert_eq!(
            said(&[0, 1]),
            "truncated: no signature after the signed data"
        );
        assert!(
            said(&[1, 2]).contains("no one-pass signature"),
            "{}",
            said(&[1, 2])
        );
        assert!(
            said(&[0, 2]).contains("no literal data"),
            "{}",
            said(&[0, 2])
        );
        assert!(said(&[0, 1, 2, 2]).contains("2 signatures after"));
        assert!(said(&[0, 0, 1, 2]).starts_with("truncated: 2 signatures announced"));
        assert!(said(&[0, 1, 1, 2]).contains("2 literal data packets"));
        assert!(said(&[0, 1, 0, 2]).contains("after the signed data"));
        assert!(said(&[2, 0, 1, 2]).contains("before the signed data"));
        assert_eq!(describe(b""), Some("no OpenPGP packets in the file".into()));
        // Cut inside the last packet: the packets themselves are broken.
        let cut = describe(&blob[..blob.len() - 10]).unwrap();
        assert!(
            cut.contains("truncated") || cut.contains("corrupt"),
            "{cut}"
        );
    }
}
