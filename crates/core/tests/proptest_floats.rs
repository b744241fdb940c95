//! Finite floats come back from a stored record bit for bit. (Without serde_json's
//! `float_roundtrip` feature, 1.0657260037416103e216 was read back as 1.0657260037416104e216.)

use proptest::prelude::*;
use serde_json::{Map, Value};
use tornsession_core::codec;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn finite_floats_round_trip_bit_for_bit(x in any::<f64>().prop_filter("finite", |x| x.is_finite())) {
        let mut data = Map::new();
        data.insert("x".to_owned(), Value::from(x));
        let record = codec::decode(&codec::encode("0123456789abcdef0123456789abcdef", 0, &data)).unwrap();
        let back = record.data["x"].as_f64().unwrap();
        prop_assert_eq!(back.to_bits(), x.to_bits(), "{} came back as {}", x, back);
    }

}

#[test]
fn known_examples_round_trip() {
    for x in [
        1.0657260037416103e216_f64,
        5.139370855890192e-250,
        -2.6979400729871033e97,
    ] {
        let mut data = Map::new();
        data.insert("x".to_owned(), Value::from(x));
        let back = codec::decode(&codec::encode("0123456789abcdef0123456789abcdef", 0, &data))
            .unwrap()
            .data["x"]
            .as_f64()
            .unwrap();
        assert_eq!(back.to_bits(), x.to_bits(), "{x:e} came back as {back:e}");
    }
}
