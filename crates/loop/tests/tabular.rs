//! CSV regression tables: parsing, the seeded split, and one-line errors.
use crate::common;

use anyhow::{ensure, Result};
use common::TempDir;
use kiln_loop::data::tabular::CsvData;
use kiln_tensor::rng::Mt19937;
use kiln_tensor::{Kind, Tensor};

fn values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(Vec::<f32>::try_from(&t.f_flatten(0, -1)?)?)
}

#[test]
fn splits_by_a_seeded_permutation_into_features_and_targets() -> Result<()> {
    let tmp = TempDir::new("split")?;
    // Row i: rooms = i, area = 10 i + 0.5, price = 100 i.
    let mut csv = String::from("rooms,price,area\n");
    for i in 0..10 {
        csv.push_str(&format!("{i},{},{}\n", 100 * i, 10.0 * i as f64 + 0.5));
    }
    let path = tmp.file("prices.csv", &csv)?;
    let split = CsvData::load(&path, "price", 0.3, 7)?;

    let perm = Mt19937::new(7).randperm(10)?;
    let expected_test: Vec<usize> = perm[..3].iter().map(|&i| i as usize).collect();
    let expected_train: Vec<usize> = perm[3..].iter().map(|&i| i as usize).collect();
    // PyTorch 2.11: random_split(range(10), [3, 7],
    // generator=torch.Generator().manual_seed(7)) gives these indices.
    ensure!(expected_test == [5, 0, 3] && expected_train == [4, 1, 7, 9, 6, 8, 2]);
    ensure!(split.test_rows == expected_test, "{:?}", split.test_rows);
    ensure!(split.train_rows == expected_train, "{:?}", split.train_rows);

    ensure!(split.feature_names == ["rooms", "area"] && split.target_name == "price");
    ensure!(split.features() == 2);
    ensure!(split.train_inputs.size() == [7, 2] && split.train_targets.size() == [7, 1]);
    ensure!(split.test_inputs.size() == [3, 2] && split.test_targets.size() == [3, 1]);
    for t in [
        &split.train_inputs,
        &split.train_targets,
        &split.test_inputs,
        &split.test_targets,
    ] {
        ensure!(t.kind() == Kind::Float, "float32 tensors");
    }
    let rows_inputs = |rows: &[usize]| -> Vec<f32> {
        rows.iter()
            .flat_map(|&i| [i as f32, 10.0 * i as f32 + 0.5])
            .collect()
    };
    let rows_targets =
        |rows: &[usize]| -> Vec<f32> { rows.iter().map(|&i| 100.0 * i as f32).collect() };
    ensure!(values(&split.test_inputs)? == rows_inputs(&expected_test));
    ensure!(values(&split.test_targets)? == rows_targets(&expected_test));
    ensure!(values(&split.train_inputs)? == rows_inputs(&expected_train));
    ensure!(values(&split.train_targets)? == rows_targets(&expected_train));

    // Same seed, same split; another seed, another split.
    ensure!(CsvData::load(&path, "price", 0.3, 7)?.test_rows == expected_test);
    ensure!(CsvData::load(&path, "price", 0.3, 8)?.test_rows != expected_test);
    // round(n * fraction) as Python rounds: ties to even, so 10 * 0.25 = 2.5
    // gives 2 and 10 * 0.35 = 3.5 gives 4.
    ensure!(CsvData::load(&path, "price", 0.25, 7)?.test_rows.len() == 2);
    ensure!(CsvData::load(&path, "price", 0.35, 7)?.test_rows.len() == 4);
    Ok(())
}

#[test]
fn parses_quoted_fields_crlf_bom_and_blank_lines() -> Result<()> {
    let tmp = TempDir::new("quoted")?;
    let path = tmp.file(
        "quoted.csv",
        "\u{feff}\"size, m2\",rooms,\"price \"\"USD\"\"\",\"multi\nline\"\r\n\
         \"50.5\", 2 ,100000,1e-3\r\n\
         \r\n\
         70,3,\"150000\",-2\r\n\
         \n",
    )?;
    let data = CsvData::read(&path)?;
    ensure!(
        data.columns == ["size, m2", "rooms", "price \"USD\"", "multi\nline"],
        "{:?}",
        data.columns
    );
    ensure!(
        data.rows
            == [
                vec![50.5, 2.0, 100000.0, 0.001],
                vec![70.0, 3.0, 150000.0, -2.0]
            ]
    );
    let split = data.split("price \"USD\"", 0.5, 0)?;
    ensure!(split.feature_names == ["size, m2", "rooms", "multi\nline"]);
    ensure!(split.train_inputs.size() == [1, 3] && split.test_targets.size() == [1, 1]);
    Ok(())
}

/// The error `CsvData::load` gives for `contents` as `name` (target `price`).
fn load_error(tmp: &TempDir, name: &str, contents: &str, fraction: f64) -> Result<String> {
    let path = tmp.file(name, contents)?;
    match CsvData::load(&path, "price", fraction, 0) {
        Ok(split) => anyhow::bail!("{name} loaded: {split:?}"),
        Err(e) => {
            let text = e.to_string();
            ensure!(!text.contains('\n'), "one line: {text}");
            Ok(text)
        }
    }
}

#[test]
fn errors_name_the_file_line_and_column() -> Result<()> {
    let tmp = TempDir::new("errors")?;
    let good_rows = "1,2,3\n4,5,6\n7,8,9\n10,11,12\n13,14,15\n";
    let cases: &[(&str, String, &str)] = &[
        ("empty.csv", String::new(), "empty.csv: file is empty"),
        ("blank.csv", "\n\n  \n".into(), "blank.csv: file is empty"),
        (
            "noheader.csv",
            good_rows.into(),
            "noheader.csv: line 1: no header row",
        ),
        (
            "notarget.csv",
            format!("rooms,area,cost\n{good_rows}"),
            r#"notarget.csv: no column "price"; the columns are "rooms", "area", "cost""#,
        ),
        (
            "prices.csv",
            format!("rooms,area,price\n{good_rows}three,1,2\n"),
            r#"prices.csv: line 7, column "rooms": "three" is not a number"#,
        ),
        (
            "nan.csv",
            format!("rooms,area,price\n{good_rows}1,NaN,2\n"),
            r#"nan.csv: line 7, column "area": "NaN" is not a finite number"#,
        ),
        (
            "emptycell.csv",
            format!("rooms,area,price\n1,,3\n{good_rows}"),
            r#"emptycell.csv: line 2, column "area": empty cell"#,
        ),
        (
            "ragged.csv",
            "rooms,area,price\n1,2,3\n4,5\n".into(),
            "ragged.csv: line 3: 2 fields, but the header has 3 columns",
        ),
        (
            "long.csv",
            "rooms,area,price\n1,2,3\n4,5,6,7\n".into(),
            "long.csv: line 3: 4 fields, but the header has 3 columns",
        ),
        (
            "onerow.csv",
            "rooms,area,price\n1,2,3\n".into(),
            "onerow.csv: 1 data row; need at least 2",
        ),
        (
            "header_only.csv",
            "rooms,area,price\n".into(),
            "header_only.csv: 0 data rows; need at least 2",
        ),
        (
            "only_target.csv",
            "price\n1\n2\n".into(),
            "only_target.csv: the only column is the target \"price\"",
        ),
        (
            "unclosed.csv",
            "rooms,area,price\n1,2,3\n\"4,5,6\n7,8,9\n".into(),
            // The csv crate reads an unclosed quote to the end of the file.
            "unclosed.csv: line 3: 1 field, but the header has 3 columns",
        ),
        (
            "afterquote.csv",
            "rooms,area,price\n1,\"2\"x,3\n".into(),
            // ... and text after a closing quote as part of the field.
            r#"afterquote.csv: line 2, column "area": "2x" is not a number"#,
        ),
        (
            "dup.csv",
            "price,area,price\n1,2,3\n".into(),
            "dup.csv: line 1: column \"price\" appears twice in the header (columns 1 and 3)",
        ),
        (
            "multiline.csv",
            "rooms,area,price\n\"1\n\",2,3\n4,x,6\n".into(),
            r#"multiline.csv: line 4, column "area": "x" is not a number"#,
        ),
    ];
    for (name, contents, expected) in cases {
        let err = load_error(&tmp, name, contents, 0.5)?;
        ensure!(
            err.starts_with(&format!("{}", tmp.path().join(expected).display())),
            "{name}:\n got      {err}\n expected {expected}"
        );
    }

    let err = load_error(&tmp, "small.csv", "a,price\n1,2\n3,4\n5,6\n", 0.1)?;
    ensure!(
        err.contains("small.csv: test_fraction 0.1 of 3 rows leaves the test set empty"),
        "{err}"
    );
    let err = load_error(&tmp, "small2.csv", "a,price\n1,2\n3,4\n5,6\n", 0.9)?;
    ensure!(err.contains("leaves the train set empty"), "{err}");

    let missing = tmp.path().join("missing.csv");
    let err = CsvData::load(&missing, "price", 0.2, 0)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(
        err == format!("{}: file does not exist", missing.display()),
        "{err}"
    );

    let path = tmp.file("ok.csv", &format!("a,b,price\n{good_rows}"))?;
    for bad in [0.0, 1.0, -0.5, 1.5, f64::NAN] {
        let err = CsvData::load(&path, "price", bad, 0)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        ensure!(
            err.starts_with("test_fraction must be between 0 and 1"),
            "{bad}: {err}"
        );
    }
    ensure!(CsvData::load(&path, "price", 0.4, 0)?.test_rows.len() == 2);
    Ok(())
}

#[test]
fn the_target_column_is_checked_before_the_cells() -> Result<()> {
    let tmp = TempDir::new("order")?;
    let err = load_error(&tmp, "order.csv", "a,b\nx,1\n2,3\n", 0.5)?;
    ensure!(err.contains("no column \"price\""), "{err}");
    Ok(())
}
