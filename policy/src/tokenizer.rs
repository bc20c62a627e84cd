//! Tokenizers: any Hugging Face `tokenizer.json`, through the `tokenizers` crate.
//!
//! The byte-level tokenizer of the tiny models is itself a `tokenizer.json`: a byte-level BPE
//! with the 256 byte symbols of GPT-2's byte-to-unicode map and no merges, so token id `b` is
//! byte `b`, plus three special tokens. One code path loads both, and transformers'
//! `PreTrainedTokenizerFast` loads it too.

use anyhow::{Context, anyhow};
use serde_json::{Value, json};
use std::path::Path;

/// The state of one incremental decoding ([`Tokenizer::decode_step`]).
#[derive(Debug, Clone, Default)]
pub struct DecodeState {
    ids: Vec<u32>,
    prefix: String,
    prefix_index: usize,
}

/// Token ids of the byte-level tokenizer: 0..=255 are bytes, then the special tokens.
pub const BOS_ID: u32 = 256;
pub const EOS_ID: u32 = 257;
pub const PAD_ID: u32 = 258;
pub const BYTE_LEVEL_VOCAB: usize = 259;
pub const BOS: &str = "<|bos|>";
pub const EOS: &str = "<|eos|>";
pub const PAD: &str = "<|pad|>";

/// A loaded tokenizer.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl Tokenizer {
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        Ok(Tokenizer { inner })
    }

    pub fn from_json(json: &str) -> anyhow::Result<Self> {
        let inner: tokenizers::Tokenizer =
            json.parse().map_err(|e| anyhow!("tokenizer.json: {e}"))?;
        Ok(Tokenizer { inner })
    }

    /// The byte-level tokenizer (see the module docs).
    pub fn byte_level() -> Self {
        Self::from_json(&byte_level_json()).expect("the byte-level tokenizer is valid")
    }

    /// Token ids of `text`, without any special tokens.
    pub fn encode(&self, text: &str) -> anyhow::Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| anyhow!("tokenizing: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The text of `ids`, special tokens left out. An incomplete UTF-8 sequence at the end
    /// (a completion cut in the middle of a character) decodes to U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> anyhow::Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| anyhow!("decoding: {e}"))
    }

    /// Incremental decoding: the text that `id` adds to the ids already given to `stream`
    /// (special tokens left out), or `None` while it ends in an incomplete character; the
    /// chunks join to [`Tokenizer::decode`] of all the ids (the `tokenizers` crate's
    /// `DecodeStream`, with its state kept in `stream`). Each step decodes only the last few ids.
    pub fn decode_step(&self, stream: &mut DecodeState, id: u32) -> anyhow::Result<Option<String>> {
        tokenizers::tokenizer::step_decode_stream(
            &self.inner,
            vec![id],
            true,
            &mut stream.ids,
            &mut stream.prefix,
            &mut stream.prefix_index,
        )
        .map_err(|e| anyhow!("decoding: {e}"))
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// GPT-2's byte-to-unicode map: printable bytes map to themselves, the rest to code points
/// from U+0100 up, so every byte is one visible character.
pub fn byte_to_char() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable = (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
        out[b as usize] = if printable {
            char::from_u32(b).unwrap()
        } else {
            let c = char::from_u32(256 + n).unwrap();
            n += 1;
            c
        };
    }
    out
}

/// The byte-level tokenizer's `tokenizer.json`.
pub fn byte_level_json() -> String {
    let chars = byte_to_char();
    let mut vocab = serde_json::Map::new();
    for (b, c) in chars.iter().enumerate() {
        vocab.insert(c.to_string(), Value::from(b));
    }
    let special = |id: u32, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    // use_regex false: with no merges, splitting into words would change nothing but time.
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false,
                            "trim_offsets": true, "use_regex": false});
    let tok = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(BOS_ID, BOS), special(EOS_ID, EOS), special(PAD_ID, PAD)],
        "normalizer": null,
        "pre_tokenizer": byte_level,
        "post_processor": null,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": []}
    });
    serde_json::to_string_pretty(&tok).expect("serializes")
}

/// `tokenizer_config.json` for the byte-level tokenizer, so `AutoTokenizer` knows its
/// special tokens.
pub fn byte_level_config_json(max_len: usize) -> String {
    serde_json::to_string_pretty(&json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS, "eos_token": EOS, "pad_token": PAD,
        "add_bos_token": false, "add_eos_token": false,
        "clean_up_tokenization_spaces": false,
        "model_max_length": max_len
    }))
    .expect("serializes")
}

/// Load `tokenizer.json` from a checkpoint directory.
pub fn load_dir(dir: &Path) -> anyhow::Result<Tokenizer> {
    let path = dir.join("tokenizer.json");
    if !path.exists() {
        return Err(anyhow!("{}: no tokenizer.json", dir.display()));
    }
    Tokenizer::from_file(&path).with_context(|| format!("loading {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_round_trips_code_with_unicode() {
        let t = Tokenizer::byte_level();
        let text = "def größe(x):\n    return \"π ≈ 3.14 🐍\"  # ümlaut\r\n\t\x00\x7f";
        let ids = t.encode(text).unwrap();
        assert_eq!(ids, text.bytes().map(u32::from).collect::<Vec<_>>());
        assert_eq!(t.decode(&ids).unwrap(), text);
        assert_eq!(t.vocab_size(), BYTE_LEVEL_VOCAB);
    }

    #[test]
    fn special_tokens_have_fixed_ids_and_are_dropped_when_decoding() {
        let t = Tokenizer::byte_level();
        assert_eq!(t.token_id(BOS), Some(BOS_ID));
        assert_eq!(t.token_id(EOS), Some(EOS_ID));
        assert_eq!(t.token_id(PAD), Some(PAD_ID));
        assert_eq!(t.encode("<|eos|>").unwrap(), vec![EOS_ID]);
        assert_eq!(t.decode(&[BOS_ID, 104, 105, EOS_ID]).unwrap(), "hi");
    }
}
