//! Silver's protection of personal data (`[silver.pii]` in dataset.toml):
//! two scalar functions the silver model calls on the columns it protects,
//! `lake_pii_hash` (HMAC-SHA256 under the key in `LAKE_PII_KEY`) and
//! `lake_pii_redact`. The key lives only inside the hash function: it is not
//! in the SQL, so it cannot reach a log, a plan or a snapshot summary.

use std::any::Any;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{Array, ArrayRef, StringArray, new_null_array};
use arrow_schema::DataType;
use datafusion::common::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;
use hmac::{Hmac, Mac};
use lake_spec::{DatasetSpec, Protection};
use sha2::Sha256;

use crate::error::{Error, Result};

pub const HASH: &str = "lake_pii_hash";
pub const REDACT: &str = "lake_pii_redact";
/// Where the hashing key comes from; never a file or a flag.
pub const KEY_ENV: &str = "LAKE_PII_KEY";
/// Shorter keys make the HMAC guessable by brute force over the key.
pub const MIN_KEY_BYTES: usize = 16;
/// Hex digits of one HMAC-SHA256 digest: what `hash` writes.
const DIGEST_HEX: usize = 64;
/// What `redact` writes in text columns.
pub const REDACTED: &str = "<redacted>";

/// The key silver hashes with, checked for length; `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct PiiKey(Arc<Vec<u8>>);

impl PiiKey {
    pub fn new(key: &str) -> Result<Self> {
        if key.len() < MIN_KEY_BYTES {
            return Err(Error::Invalid(format!(
                "{KEY_ENV} is {} bytes; use at least {MIN_KEY_BYTES} (e.g. `openssl rand -hex 32`)",
                key.len()
            )));
        }
        Ok(Self(Arc::new(key.as_bytes().to_vec())))
    }
}

impl std::fmt::Debug for PiiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PiiKey(<redacted>)")
    }
}

/// The `model` stage of the silver query: the projection with each
/// protected column replaced or left out, or the projection itself.
pub(crate) fn protect(spec: &DatasetSpec, projection: &str) -> String {
    let pii = &spec.silver.pii;
    if pii.is_empty() {
        return projection.to_string();
    }
    let quoted = |c: &str| format!("\"{}\"", c.replace('"', "\"\""));
    let dropped: Vec<String> = pii
        .iter()
        .filter(|(_, p)| *p == Protection::Drop)
        .map(|(c, _)| quoted(c))
        .collect();
    let replaced: Vec<String> = pii
        .iter()
        .filter_map(|(c, p)| {
            let function = match p {
                Protection::Hash => HASH,
                Protection::Redact => REDACT,
                Protection::Drop => return None,
            };
            Some(format!("{function}({col}) AS {col}", col = quoted(c)))
        })
        .collect();
    let mut select = String::from("SELECT *");
    if !dropped.is_empty() {
        let _ = write!(select, " EXCLUDE ({})", dropped.join(", "));
    }
    if !replaced.is_empty() {
        let _ = write!(select, " REPLACE ({})", replaced.join(", "));
    }
    format!(
        "    -- [silver.pii] of {}\n    {select}\n    FROM (\n{projection}) AS projected\n",
        spec.file
    )
}

/// Registers the two functions. Without a key, hashing fails with what to
/// set, so a dataset that hashes never writes a column in clear.
pub(crate) fn register(ctx: &SessionContext, key: Option<&PiiKey>) {
    ctx.register_udf(ScalarUDF::from(HashUdf::new(key.cloned())));
    ctx.register_udf(ScalarUDF::from(RedactUdf::new()));
}

/// Refuses a run that would hash without a key, naming the columns.
pub fn require_key(spec: &DatasetSpec, key: Option<&PiiKey>) -> Result<()> {
    let hashed: Vec<&str> = spec
        .silver
        .pii
        .iter()
        .filter(|(_, p)| *p == Protection::Hash)
        .map(|(c, _)| c.as_str())
        .collect();
    if key.is_none() && !hashed.is_empty() {
        return Err(Error::Invalid(format!(
            "{} hashes {} ([silver.pii] in {}); set {KEY_ENV} to a secret of at least \
             {MIN_KEY_BYTES} bytes and keep it: another key hashes the same values differently",
            spec.silver.table,
            hashed.join(", "),
            spec.file
        )));
    }
    Ok(())
}

struct HashUdf {
    key: Option<PiiKey>,
    signature: Signature,
}

impl HashUdf {
    fn new(key: Option<PiiKey>) -> Self {
        Self {
            key,
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl std::fmt::Debug for HashUdf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(HASH)
    }
}

impl PartialEq for HashUdf {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for HashUdf {}

impl Hash for HashUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        HASH.hash(state);
    }
}

impl ScalarUDFImpl for HashUdf {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        HASH
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let Some(key) = &self.key else {
            return Err(datafusion::error::DataFusionError::Execution(format!(
                "{HASH} needs {KEY_ENV}"
            )));
        };
        let [value] = args.args.as_slice() else {
            return Err(datafusion::error::DataFusionError::Internal(format!(
                "{HASH} takes one argument"
            )));
        };
        let values = value.to_array(args.number_rows)?;
        let text = arrow_cast::cast(&values, &DataType::Utf8)?;
        let text = text.as_any().downcast_ref::<StringArray>().ok_or_else(|| {
            datafusion::error::DataFusionError::Internal("cast to Utf8 gave no strings".into())
        })?;
        let internal = |e: &dyn std::fmt::Display| {
            datafusion::error::DataFusionError::Internal(format!("{HASH}: {e}"))
        };
        let keyed = <Hmac<Sha256> as Mac>::new_from_slice(&key.0).map_err(|e| internal(&e))?;
        // Three hashed columns of every silver row: formatting each digest
        // byte through `write!` took three times as long as the HMAC itself,
        // and a String per value meant an allocation and a copy.
        let mut hashed = StringBuilder::with_capacity(text.len(), text.len() * DIGEST_HEX);
        let mut digits = [0u8; DIGEST_HEX];
        for value in text.iter() {
            let Some(value) = value else {
                hashed.append_null();
                continue;
            };
            let mut mac = keyed.clone();
            mac.update(value.as_bytes());
            hex::encode_to_slice(mac.finalize().into_bytes(), &mut digits)
                .map_err(|e| internal(&e))?;
            hashed.append_value(std::str::from_utf8(&digits).map_err(|e| internal(&e))?);
        }
        Ok(ColumnarValue::Array(Arc::new(hashed.finish()) as ArrayRef))
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct RedactUdf {
    signature: Signature,
}

impl RedactUdf {
    fn new() -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for RedactUdf {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        REDACT
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, types: &[DataType]) -> DfResult<DataType> {
        Ok(types.first().cloned().unwrap_or(DataType::Null))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [value] = args.args.as_slice() else {
            return Err(datafusion::error::DataFusionError::Internal(format!(
                "{REDACT} takes one argument"
            )));
        };
        let values = value.to_array(args.number_rows)?;
        let data_type = values.data_type().clone();
        let redacted: ArrayRef = match data_type {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                let masked: StringArray = (0..values.len())
                    .map(|i| values.is_valid(i).then_some(REDACTED))
                    .collect();
                arrow_cast::cast(&masked, &data_type)?
            }
            other => new_null_array(&other, values.len()),
        };
        Ok(ColumnarValue::Array(redacted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::printed;

    #[tokio::test]
    async fn hash_is_hmac_sha256_and_redact_keeps_nulls() {
        let ctx = SessionContext::new();
        // RFC 4231, test case 2 (a short key, allowed here to use the vector).
        register(&ctx, Some(&PiiKey(Arc::new(b"Jefe".to_vec()))));
        let hashed = printed(
            &ctx,
            "SELECT lake_pii_hash('what do ya want for nothing?') AS h",
        )
        .await;
        assert!(
            hashed.contains("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
            "{hashed}"
        );
        let redacted = printed(
            &ctx,
            "SELECT lake_pii_redact(a) AS a, lake_pii_redact(b) AS b \
             FROM (VALUES ('x', 1), (NULL, 2)) AS t(a, b)",
        )
        .await;
        assert!(redacted.contains("<redacted>"), "{redacted}");
        assert!(
            !redacted.contains("| 1 ") && !redacted.contains("| x "),
            "{redacted}"
        );
    }

    #[tokio::test]
    async fn hashing_without_a_key_fails_instead_of_writing_clear_values() {
        let ctx = SessionContext::new();
        register(&ctx, None);
        let result = ctx
            .sql("SELECT lake_pii_hash('someone') AS h")
            .await
            .expect("plan")
            .collect()
            .await;
        assert!(result.is_err());
    }

    #[test]
    fn short_keys_are_refused_and_keys_never_print() {
        assert!(PiiKey::new("short").is_err());
        let key = PiiKey::new("a-long-enough-secret-key").expect("key");
        assert_eq!(format!("{key:?}"), "PiiKey(<redacted>)");
    }

    #[test]
    fn the_model_replaces_and_drops_the_declared_columns() {
        let pipeline = lake_spec::Pipeline::built_in().expect("built in");
        let mut spec: DatasetSpec = (**pipeline.dataset("tweets").expect("tweets")).clone();
        spec.silver.pii = vec![
            ("user_id".into(), Protection::Hash),
            ("username".into(), Protection::Redact),
            ("display_name".into(), Protection::Drop),
        ];
        let sql = protect(&spec, "SELECT 1\n");
        assert!(
            sql.contains(
                "SELECT * EXCLUDE (\"display_name\") REPLACE (lake_pii_hash(\"user_id\") AS \
                 \"user_id\", lake_pii_redact(\"username\") AS \"username\")"
            ),
            "{sql}"
        );
        spec.silver.pii.clear();
        assert_eq!(protect(&spec, "SELECT 1\n"), "SELECT 1\n");
    }
}
