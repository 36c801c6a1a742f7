//! A stable text rendering of the wire contract, diffed against the
//! checked-in `proto/wire.txt` by a test, so that a change to any package,
//! message, field number or type, service or method is always deliberate.
//! After an intended change, regenerate with `HULL_BLESS=1 cargo test -p
//! hull-proto wire`.

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};

/// Renders every compiled file: messages with field numbers, labels and
/// types; enums with values; services with methods and stream markers.
pub fn render() -> String {
    render_set(crate::FILE_DESCRIPTOR_SET)
}

/// Renders a serialized `FileDescriptorSet`.
pub fn render_set(bytes: &[u8]) -> String {
    let set = FileDescriptorSet::decode(bytes).unwrap_or_default();
    let mut files = set.file;
    files.sort_by(|a, b| a.package().cmp(b.package()).then(a.name().cmp(b.name())));
    let mut out = String::new();
    for f in &files {
        let pkg = f.package();
        for m in &f.message_type {
            message(&mut out, &format!("{pkg}.{}", m.name()), m);
        }
        for e in &f.enum_type {
            for v in &e.value {
                out.push_str(&format!(
                    "enum {pkg}.{} {} = {}\n",
                    e.name(),
                    v.name(),
                    v.number()
                ));
            }
        }
        for s in &f.service {
            for m in &s.method {
                out.push_str(&format!(
                    "rpc {pkg}.{}/{}({}{}) returns ({}{})\n",
                    s.name(),
                    m.name(),
                    if m.client_streaming() { "stream " } else { "" },
                    m.input_type().trim_start_matches('.'),
                    if m.server_streaming() { "stream " } else { "" },
                    m.output_type().trim_start_matches('.'),
                ));
            }
        }
    }
    out
}

fn message(out: &mut String, name: &str, m: &DescriptorProto) {
    for f in &m.field {
        let label = match f.label() {
            Label::Repeated => "repeated ",
            _ => "",
        };
        let ty = match f.r#type() {
            Type::Message | Type::Enum => f.type_name().trim_start_matches('.').to_owned(),
            t => format!("{t:?}").to_lowercase(),
        };
        out.push_str(&format!(
            "msg {name} {} = {} {label}{ty}\n",
            f.name(),
            f.number()
        ));
    }
    for nested in &m.nested_type {
        message(out, &format!("{name}.{}", nested.name()), nested);
    }
    for e in &m.enum_type {
        for v in &e.value {
            out.push_str(&format!(
                "enum {name}.{} {} = {}\n",
                e.name(),
                v.name(),
                v.number()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn wire_contract_matches_checked_in_rendering() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/wire.txt");
        let now = super::render();
        if std::env::var_os("HULL_BLESS").is_some() {
            std::fs::write(path, &now).unwrap();
            return;
        }
        let before = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            before == now,
            "the wire contract changed; if intended, rerun with HULL_BLESS=1 and commit proto/wire.txt"
        );
    }
}
