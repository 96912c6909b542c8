//! RFC 3501 §7.4.2 (grammar §9: body, body-type-1part, body-type-mpart,
//! body-ext-*), RFC 9051 §7.5.2: BODY and BODYSTRUCTURE.
//!
//! The tree comes from `part.rs`. The field values come from each part's
//! raw header: Content-ID, -Description and -MD5 unfolded; disposition,
//! language and location parsed. The conventions (upper case tokens, byte
//! and LF counts as stored, APPLICATION/OCTET-STREAM for unparsed
//! structure) are explained in the module essay in `mod.rs`.

use super::content_type::{Param, parse_disposition, parse_languages};
use super::envelope::write_envelope;
use super::header::first_value;
use super::imap_string::{push_nstring, push_string};
use super::part::{MimePart, PartKind, count_lines};

/// Writes `body` for `part`: BODYSTRUCTURE when `extensible`, else BODY.
pub(super) fn write_body(out: &mut Vec<u8>, raw: &[u8], part: &MimePart, extensible: bool) {
    let header = raw.get(part.header.clone()).unwrap_or_default();
    out.push(b'(');
    match &part.kind {
        // body-type-mpart = 1*body SP media-subtype [SP body-ext-mpart]
        PartKind::Multipart(children) => {
            for child in children {
                write_body(out, raw, child, extensible);
            }
            out.push(b' ');
            push_string(out, &part.media.sub);
            if extensible {
                out.push(b' ');
                write_params(out, &part.media.params);
                write_dsp_lang_loc(out, header);
            }
        }
        // body-type-1part = (body-type-basic / body-type-msg / body-type-text)
        //                   [SP body-ext-1part]
        PartKind::Single | PartKind::Message(_) => {
            let unparsed_structure = matches!(part.kind, PartKind::Single)
                && (part.media.main == b"MULTIPART" || part.media.is_encapsulated_message());
            let (main, sub): (&[u8], &[u8]) = if unparsed_structure {
                (b"APPLICATION", b"OCTET-STREAM")
            } else {
                (&part.media.main, &part.media.sub)
            };
            push_string(out, main);
            out.push(b' ');
            push_string(out, sub);
            out.push(b' ');
            write_body_fields(out, raw, part, header);
            if let PartKind::Message(inner) = &part.kind {
                out.push(b' ');
                write_envelope(out, raw.get(inner.header.clone()).unwrap_or_default());
                out.push(b' ');
                write_body(out, raw, inner, extensible);
            }
            if matches!(part.kind, PartKind::Message(_)) || main == b"TEXT" {
                out.extend_from_slice(
                    format!(" {}", count_lines(raw, part.body.clone())).as_bytes(),
                );
            }
            if extensible {
                // body-ext-1part = body-fld-md5 [SP body-fld-dsp [SP body-fld-lang
                //                  [SP body-fld-loc *(SP body-extension)]]]
                out.push(b' ');
                push_nstring(
                    out,
                    non_empty(first_value(header, b"Content-MD5")).as_deref(),
                );
                write_dsp_lang_loc(out, header);
            }
        }
    }
    out.push(b')');
}

/// body-fields = body-fld-param SP body-fld-id SP body-fld-desc SP
///               body-fld-enc SP body-fld-octets
fn write_body_fields(out: &mut Vec<u8>, raw: &[u8], part: &MimePart, header: &[u8]) {
    write_params(out, &part.media.params);
    out.push(b' ');
    push_nstring(
        out,
        non_empty(first_value(header, b"Content-ID")).as_deref(),
    );
    out.push(b' ');
    push_nstring(
        out,
        non_empty(first_value(header, b"Content-Description")).as_deref(),
    );
    out.push(b' ');
    push_string(
        out,
        if part.encoding.is_empty() {
            b"7BIT"
        } else {
            &part.encoding
        },
    );
    let octets = raw.get(part.body.clone()).map_or(0, <[u8]>::len);
    out.extend_from_slice(format!(" {octets}").as_bytes());
}

/// `SP body-fld-dsp SP body-fld-lang SP body-fld-loc`
fn write_dsp_lang_loc(out: &mut Vec<u8>, header: &[u8]) {
    out.push(b' ');
    match first_value(header, b"Content-Disposition").and_then(|v| parse_disposition(&v)) {
        Some((kind, params)) => {
            out.push(b'(');
            push_string(out, &kind.to_ascii_uppercase());
            out.push(b' ');
            write_params(out, &params);
            out.push(b')');
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    let languages = first_value(header, b"Content-Language")
        .map(|v| parse_languages(&v))
        .unwrap_or_default();
    if languages.is_empty() {
        out.extend_from_slice(b"NIL");
    } else {
        out.push(b'(');
        for (n, tag) in languages.iter().enumerate() {
            if n > 0 {
                out.push(b' ');
            }
            push_string(out, tag);
        }
        out.push(b')');
    }
    out.push(b' ');
    push_nstring(
        out,
        non_empty(first_value(header, b"Content-Location")).as_deref(),
    );
}

/// body-fld-param: `("NAME" "value" ...)` or NIL.
fn write_params(out: &mut Vec<u8>, params: &[Param]) {
    if params.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for (n, p) in params.iter().enumerate() {
        if n > 0 {
            out.push(b' ');
        }
        push_string(out, &p.name.to_ascii_uppercase());
        out.push(b' ');
        push_string(out, &p.value);
    }
    out.push(b')');
}

fn non_empty(value: Option<Vec<u8>>) -> Option<Vec<u8>> {
    value.filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::super::part::tests::NESTED;
    use super::*;

    fn bs(raw: &[u8], extensible: bool) -> String {
        let mut out = Vec::new();
        write_body(&mut out, raw, &MimePart::parse_message(raw), extensible);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The BODY of RFC 3501 §7.4.2's FETCH example.
    #[test]
    fn rfc3501_single_part_example() {
        let mut raw = b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\r\n".to_vec();
        for _ in 0..91 {
            raw.extend_from_slice(&[b'x'; 31]);
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(&[b'y'; 23]);
        raw.extend_from_slice(b"\r\n");
        assert_eq!(
            bs(&raw, false),
            r#"("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92)"#
        );
        assert_eq!(
            bs(&raw, true),
            r#"("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92 NIL NIL NIL NIL)"#
        );
    }

    /// The multipart BODYSTRUCTURE of RFC 3501 §7.4.2. Each part's last line
    /// has no line end of its own (it belongs to the boundary), so it is not
    /// counted.
    #[test]
    fn rfc3501_multipart_example() {
        let mut raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n".to_vec();
        for _ in 0..23 {
            raw.extend_from_slice(&[b'a'; 46]);
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(&[b'a'; 48]);
        raw.extend_from_slice(
            b"\r\n--b\r\nContent-Type: TEXT/PLAIN; CHARSET=US-ASCII; NAME=cc.diff\r\n\
              Content-ID: <960723163407.20117h@cac.washington.edu>\r\n\
              Content-Description: Compiler diff\r\n\
              Content-Transfer-Encoding: BASE64\r\n\r\n",
        );
        for _ in 0..73 {
            raw.extend_from_slice(&[b'Q'; 60]);
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(&[b'Q'; 28]);
        raw.extend_from_slice(b"\r\n--b--\r\n");
        assert_eq!(
            bs(&raw, false),
            r#"(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23)("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff") "<960723163407.20117h@cac.washington.edu>" "Compiler diff" "BASE64" 4554 73) "MIXED")"#
        );
    }

    #[test]
    fn missing_content_type_defaults() {
        assert_eq!(
            bs(b"Subject: x\r\n\r\nhello\r\n", true),
            r#"("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 7 1 NIL NIL NIL NIL)"#
        );
        // Invalid Content-Type: RFC 2045 §5.2 default too.
        assert_eq!(
            bs(b"Content-Type: garbage\r\n\r\nx", false),
            r#"("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1 0)"#
        );
    }

    #[test]
    fn nested_multiparts_and_messages() {
        let inner_env = r#"(NIL "inner" NIL NIL NIL NIL NIL NIL NIL NIL)"#;
        let deep_env = r#"(NIL "deep" NIL NIL NIL NIL NIL NIL NIL NIL)"#;
        let expected = format!(
            "(((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 12 1 NIL NIL NIL NIL)\
             (\"TEXT\" \"HTML\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 8 0 NIL NIL NIL NIL) \"ALTERNATIVE\" (\"BOUNDARY\" \"Y\") NIL NIL NIL)\
             (\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 144 {inner_env} \
             ((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 2 0 NIL NIL NIL NIL)\
             (\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 26 {deep_env} \
             (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 9 0 NIL NIL NIL NIL) 2 NIL NIL NIL NIL) \
             \"MIXED\" (\"BOUNDARY\" \"Z\") NIL NIL NIL) 13 NIL NIL NIL NIL) \
             \"MIXED\" (\"BOUNDARY\" \"X\") NIL NIL NIL)"
        );
        assert_eq!(bs(NESTED.as_bytes(), true), expected);

        let expected_body = format!(
            "(((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 12 1)\
             (\"TEXT\" \"HTML\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 8 0) \"ALTERNATIVE\")\
             (\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 144 {inner_env} \
             ((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 2 0)\
             (\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 26 {deep_env} \
             (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 9 0) 2) \"MIXED\") 13) \"MIXED\")"
        );
        assert_eq!(bs(NESTED.as_bytes(), false), expected_body);
    }

    #[test]
    fn bare_lf_sizes_are_as_stored() {
        let lf = NESTED.replace("\r\n", "\n");
        let got = bs(lf.as_bytes(), false);
        // "plain\nline2" is 11 bytes; the first message/rfc822 body is 144 - 13.
        assert!(got.contains(r#""7BIT" 11 1)"#), "{got}");
        assert!(got.contains(r#""7BIT" 131 (NIL "inner""#), "{got}");
        assert_eq!(
            bs(
                b"Subject: x\nContent-Type: text/plain; charset=utf-8\n\nline1\nline2\n",
                false
            ),
            r#"("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 12 2)"#
        );
    }

    #[test]
    fn extension_data() {
        let raw = b"Content-Type: multipart/mixed; boundary=b\r\n\
                    Content-Disposition: inline\r\n\
                    Content-Language: fr\r\n\
                    Content-Location: http://x/\r\n\r\n\
                    --b\r\n\
                    Content-Type: application/pdf; name=\"r.pdf\"\r\n\
                    Content-ID: <id1@x>\r\n\
                    Content-Description: The report\r\n\
                    Content-Transfer-Encoding: base64\r\n\
                    Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\r\n\
                    Content-Disposition: attachment; filename=\"r.pdf\";\r\n size=3\r\n\
                    Content-Language: en, de\r\n\
                    Content-Location:\r\n http://x/r.pdf\r\n\r\n\
                    AAAA\r\n--b--\r\n";
        assert_eq!(
            bs(raw, true),
            r#"(("APPLICATION" "PDF" ("NAME" "r.pdf") "<id1@x>" "The report" "BASE64" 4 "Q2hlY2sgSW50ZWdyaXR5IQ==" ("ATTACHMENT" ("FILENAME" "r.pdf" "SIZE" "3")) ("en" "de") "http://x/r.pdf") "MIXED" ("BOUNDARY" "b") ("INLINE" NIL) ("fr") "http://x/")"#
        );
        assert_eq!(
            bs(raw, false),
            r#"(("APPLICATION" "PDF" ("NAME" "r.pdf") "<id1@x>" "The report" "BASE64" 4) "MIXED")"#
        );
    }

    #[test]
    fn rfc2231_parameters() {
        let raw = b"Content-Type: application/octet-stream;\r\n name*0=\"long \"; name*1=\"name.bin\"\r\n\
                    Content-Disposition: attachment; filename*=utf-8''%E2%82%AC%20rates.txt\r\n\r\nx";
        assert_eq!(
            bs(raw, true),
            r#"("APPLICATION" "OCTET-STREAM" ("NAME" "long name.bin") NIL NIL "7BIT" 1 NIL ("ATTACHMENT" ("FILENAME*" "utf-8''%E2%82%AC%20rates.txt")) NIL NIL)"#
        );
    }

    /// RFC 2231 §3/§4: an encoded, continued boundary still splits the
    /// multipart; the parameter goes out merged, as written.
    #[test]
    fn rfc2231_encoded_boundary_splits_the_multipart() {
        let raw = b"Content-Type: multipart/mixed; boundary*0*=us-ascii''a%2Db;\r\n boundary*1=c\r\n\r\n\
                    --a-bc\r\nContent-Type: text/plain\r\n\r\none\r\n--a-bc\r\n\r\ntwo\r\n--a-bc--\r\n";
        assert_eq!(
            bs(raw, true),
            r#"(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3 0 NIL NIL NIL NIL)("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3 0 NIL NIL NIL NIL) "MIXED" ("BOUNDARY*" "us-ascii''a%2Dbc") NIL NIL NIL)"#
        );
    }

    /// RFC 2045 §5.2: every text part without a charset says US-ASCII,
    /// whether it has a Content-Type or not, after its other parameters.
    #[test]
    fn text_without_charset_is_us_ascii() {
        for (header, params) in [
            ("", r#"("CHARSET" "US-ASCII")"#),
            ("Content-Type: text/plain\r\n", r#"("CHARSET" "US-ASCII")"#),
            (
                "Content-Type: text/html; format=flowed\r\n",
                r#"("FORMAT" "flowed" "CHARSET" "US-ASCII")"#,
            ),
            (
                "Content-Type: text/plain; CharSet=utf-8\r\n",
                r#"("CHARSET" "utf-8")"#,
            ),
            (
                "Content-Type: text/plain; charset=\"\"\r\n",
                r#"("CHARSET" "")"#,
            ),
        ] {
            let raw = format!("{header}\r\nx");
            let got = bs(raw.as_bytes(), false);
            assert!(got.starts_with("(\"TEXT\" "), "{got}");
            assert!(
                got.contains(&format!(" {params} NIL NIL \"7BIT\" 1 0)")),
                "{header}: {got}"
            );
        }
        // Not for other types.
        assert_eq!(
            bs(b"Content-Type: image/png\r\n\r\nx", false),
            r#"("IMAGE" "PNG" NIL NIL NIL "7BIT" 1)"#
        );
    }

    #[test]
    fn eight_bit_values_are_literals() {
        let raw = b"Content-Type: text/plain; name=\"caf\xc3\xa9\"\r\nContent-Description: \xe9t\xe9\r\n\r\n";
        let mut out = Vec::new();
        write_body(&mut out, raw, &MimePart::parse_message(raw), false);
        assert_eq!(
            out,
            b"(\"TEXT\" \"PLAIN\" (\"NAME\" {5}\r\ncaf\xc3\xa9 \"CHARSET\" \"US-ASCII\") NIL {3}\r\n\xe9t\xe9 \"7BIT\" 0 0)"
        );
    }

    #[test]
    fn unparsed_structure_is_octet_stream() {
        assert_eq!(
            bs(b"Content-Type: multipart/mixed\r\n\r\nx\r\n", true),
            r#"("APPLICATION" "OCTET-STREAM" NIL NIL NIL "7BIT" 3 NIL NIL NIL NIL)"#
        );
        assert_eq!(
            bs(b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\nU3ViamVjdDogaGkNCg0K\r\n", false),
            r#"("APPLICATION" "OCTET-STREAM" NIL NIL NIL "BASE64" 22)"#
        );
    }

    #[test]
    fn empty_multipart_and_digest() {
        assert_eq!(
            bs(
                b"Content-Type: multipart/mixed; boundary=X\r\n\r\n--X--\r\n",
                false
            ),
            r#"(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 0 0) "MIXED")"#
        );
        let digest = b"Content-Type: multipart/digest; boundary=X\r\n\r\n--X\r\n\r\nSubject: d1\r\n\r\nb1\r\n--X--\r\n";
        assert_eq!(
            bs(digest, false),
            r#"(("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 17 (NIL "d1" NIL NIL NIL NIL NIL NIL NIL NIL) ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 2 0) 2) "DIGEST")"#
        );
    }

    #[test]
    fn other_encodings_and_message_types() {
        assert_eq!(
            bs(b"Content-Type: Message/Delivery-Status\r\nContent-Transfer-Encoding: X-UUEncode (c)\r\n\r\nx\n", false),
            r#"("MESSAGE" "DELIVERY-STATUS" NIL NIL NIL "X-UUENCODE" 2)"#
        );
        assert_eq!(
            bs(
                b"Content-Type: message/global\r\n\r\nSubject: g\r\n\r\n",
                false
            ),
            r#"("MESSAGE" "GLOBAL" NIL NIL NIL "7BIT" 14)"#
        );
    }
}
