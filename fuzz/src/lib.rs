//! Helpers shared by the fuzz targets in `fuzz_targets/`.

use serde::Serialize;
use serde_json::Value;

/// Asserts that two values serialize to the same JSON, numbers compared
/// within a rounding error: serde_json's default float parsing is
/// best-effort, so a float may come back one unit in the last place off.
pub fn assert_same_json<T: Serialize + std::fmt::Debug>(a: &T, b: &T) {
    let (va, vb) = (
        serde_json::to_value(a).expect("serializes"),
        serde_json::to_value(b).expect("serializes"),
    );
    assert!(same(&va, &vb), "{a:?}\n  differs from\n{b:?}");
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            x == y || (x - y).abs() <= f64::EPSILON * 4.0 * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}
