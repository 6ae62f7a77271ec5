//! Tests of specs, options and the registry.
use super::*;
use std::fmt;
use std::sync::Arc;

type Build = dyn Fn(&mut Spec) -> Result<String> + Send + Sync;

fn msg<T: fmt::Debug>(r: Result<T>) -> String {
    match r {
        Ok(v) => format!("unexpectedly Ok: {v:?}"),
        Err(e) => e.to_string(),
    }
}

fn spec(text: &str) -> Spec {
    text.parse().unwrap_or_else(|_| Spec {
        name: format!("unparsable {text}"),
        options: vec![],
        used: vec![],
    })
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Min,
    Max,
}
crate::choices!(Mode { Min = "min", Max = "max" });

#[derive(Debug, Clone, PartialEq)]
struct Cfg {
    lr: f64,
    steps: usize,
    nesterov: bool,
    t_max: Option<usize>,
    betas: (f64, f64),
    weight: Option<Vec<f64>>,
    mode: Mode,
    milestones: Vec<usize>,
}

impl Default for Cfg {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            steps: 0,
            nesterov: false,
            t_max: None,
            betas: (0.9, 0.999),
            weight: None,
            mode: Mode::Min,
            milestones: vec![],
        }
    }
}

impl Options for Cfg {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> Result<()> {
        v.option(OptionInfo::new("lr", "learning rate"), &mut self.lr)?;
        v.option(
            OptionInfo::new("steps", "steps").required(),
            &mut self.steps,
        )?;
        v.option(OptionInfo::new("nesterov", "nesterov"), &mut self.nesterov)?;
        v.option(
            OptionInfo::new("t_max", "period").aliases(&["T_max"]),
            &mut self.t_max,
        )?;
        v.option(OptionInfo::new("betas", "betas"), &mut self.betas)?;
        v.option(OptionInfo::new("weight", "weights"), &mut self.weight)?;
        v.option(OptionInfo::new("mode", "min | max"), &mut self.mode)?;
        v.option(OptionInfo::new("milestones", "when"), &mut self.milestones)
    }
}

fn registry() -> Registry<Build> {
    let mut r: Registry<Build> = Registry::new("thing", "Things");
    let build: Arc<Build> = Arc::new(|s: &mut Spec| {
        let mut c = Cfg::default();
        s.apply(&mut c)?;
        Ok(format!("{c:?}"))
    });
    r.register(
        Entry::new("demo-thing", "a demo", build)
            .alias("DemoThing")
            .options_of(&mut Cfg::default()),
    );
    r.register(Entry::new(
        "plain",
        "no options",
        Arc::new(|_: &mut Spec| Ok("plain".to_string())) as Arc<Build>,
    ));
    r.register_code_only("lambda", &["LambdaLR"], "needs a closure");
    r
}

fn build(r: &Registry<Build>, text: &str) -> Result<String> {
    let (entry, mut s) = r.prepare(&text.parse()?)?;
    (entry.build)(&mut s)
}

#[test]
fn parses_names_options_and_lists() {
    let mut s = spec("sgd:lr=1e-3, momentum=0.9,nesterov=true,weight=[1;2.5]");
    assert_eq!(s.name, "sgd");
    assert_eq!(s.f64("lr").ok().flatten(), Some(1e-3));
    assert_eq!(s.f64("momentum").ok().flatten(), Some(0.9));
    assert_eq!(s.bool("nesterov").ok().flatten(), Some(true));
    assert_eq!(s.f64_list("weight").ok().flatten(), Some(vec![1.0, 2.5]));
    assert_eq!(s.f64("dampening").ok().flatten(), None);
    assert!(s.finish(&["lr"]).is_ok());
}

#[test]
fn errors_name_the_problem() {
    assert!(msg(":lr=1".parse::<Spec>()).contains("has no name"));
    assert!(msg("sgd:lr".parse::<Spec>()).contains("'lr' in spec 'sgd:lr' is not key=value"));
    assert!(msg("sgd:lr=1,lr=2".parse::<Spec>()).contains("given twice"));
    let mut s = spec("adam:lr=x,foo=1");
    assert_eq!(msg(s.f64("lr")), "adam: option lr=x is not a number");
    assert_eq!(
        msg(s.finish(&["lr", "betas"])),
        "adam: unknown option(s) foo; accepted: lr, betas"
    );
    let s = spec("adam:mommentum=1");
    assert_eq!(
        msg(s.finish(&["lr", "momentum"])),
        "adam: unknown option(s) mommentum (did you mean momentum?); accepted: lr, momentum"
    );
}

#[test]
fn set_display_and_serde_round_trip() -> Result<()> {
    let mut s: Spec = "sgd".parse()?;
    assert_eq!(s.to_string(), "sgd");
    s.set("lr", 0.5)?;
    s.set("momentum", "0.9")?;
    s.set("lr", py_float(1e-8))?;
    assert_eq!(s.to_string(), "sgd:lr=1e-08,momentum=0.9");
    assert_eq!(s.get("lr"), Some("1e-08"));
    assert_eq!(s.to_string().parse::<Spec>()?, s);
    assert!(s.set("bad,key", 1).is_err() && s.set("k", "a]b").is_err());
    // A value holding `,` is stored in brackets, so the text reads back.
    s.set("k", "1,2")?;
    assert_eq!(s.get("k"), Some("[1,2]"));
    assert_eq!(s.to_string().parse::<Spec>()?, s);
    assert_eq!(s.remove("k").as_deref(), Some("[1,2]"));
    assert_eq!(s.remove("momentum").as_deref(), Some("0.9"));
    assert_eq!(s.to_string(), "sgd:lr=1e-08");
    let json = serde_json::to_string(&s).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    assert_eq!(json, "\"sgd:lr=1e-08\"");
    let back: Spec =
        serde_json::from_str(&json).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    assert_eq!(back, s);
    assert!(serde_json::from_str::<Spec>("\":x=1\"").is_err());
    assert!(Spec::new("a:b").is_err() && Spec::new("").is_err());
    Ok(())
}

#[test]
fn values_read_and_write_canonically() {
    let norm = |mut v: Box<dyn OptionValue>, t: &str| -> std::result::Result<String, String> {
        v.parse_text(t)?;
        Ok(v.format_text())
    };
    assert_eq!(norm(Box::new(0.0f64), "1e-3"), Ok("0.001".into()));
    assert_eq!(norm(Box::new(0.0f64), "1e-8"), Ok("1e-08".into()));
    assert_eq!(norm(Box::new(0.0f64), "-inf"), Ok("-inf".into()));
    assert_eq!(norm(Box::new(0.0f64), "x"), Err("a number".into()));
    assert_eq!(norm(Box::new(false), "1"), Ok("true".into()));
    assert_eq!(
        norm(Box::new(0usize), "-1"),
        Err("a non-negative integer".into())
    );
    assert_eq!(norm(Box::new(None::<usize>), "none"), Ok("none".into()));
    assert_eq!(norm(Box::new(None::<usize>), "7"), Ok("7".into()));
    assert_eq!(
        norm(Box::new(None::<usize>), "x"),
        Err("none or a non-negative integer".into())
    );
    assert_eq!(
        norm(Box::new((0.0, 0.0)), "[0.8; 0.99]"),
        Ok("0.8;0.99".into())
    );
    assert_eq!(
        norm(Box::new((0.0, 0.0)), "0.8"),
        Err("2 values written a;b".into())
    );
    assert_eq!(
        norm(Box::new((None::<f64>, 0.0)), "none;1e-3"),
        Ok("none;0.001".into())
    );
    assert_eq!(norm(Box::<Vec<f64>>::default(), "[]"), Ok("[]".into()));
    assert_eq!(
        norm(Box::<Vec<f64>>::default(), "1;2"),
        Ok("1.0;2.0".into())
    );
    assert_eq!(
        norm(Box::<Vec<f64>>::default(), "1;x"),
        Err("a ;-separated list of numbers".into())
    );
    assert_eq!(norm(Box::new(Mode::Min), "max"), Ok("max".into()));
    assert_eq!(
        norm(Box::new(Mode::Min), "mid"),
        Err("one of min, max".into())
    );
    for v in [
        0.1,
        1e-300,
        123456789012345680.0,
        -2.5e-7,
        3.0,
        f64::MIN_POSITIVE,
    ] {
        assert_eq!(py_float(v).parse::<f64>().ok(), Some(v), "{v}");
    }
    assert_eq!(py_float(1e16), "1e+16");
    assert_eq!(py_float(-0.0), "-0.0");
}

#[test]
fn apply_reads_fields_aliases_and_checks_required() -> Result<()> {
    let mut c = Cfg::default();
    spec("demo:steps=3,T_max=9,betas=0.5;0.6,weight=1;2,mode=max,milestones=[2;5]")
        .apply(&mut c)?;
    assert_eq!(
        c,
        Cfg {
            steps: 3,
            t_max: Some(9),
            betas: (0.5, 0.6),
            weight: Some(vec![1.0, 2.0]),
            mode: Mode::Max,
            milestones: vec![2, 5],
            ..Cfg::default()
        }
    );
    assert_eq!(
        msg(spec("demo").apply(&mut Cfg::default())),
        "demo: option steps is required"
    );
    assert_eq!(
        msg(spec("demo:steps=1,t_max=1,T_max=2").apply(&mut Cfg::default())),
        "demo: option t_max is given twice (as t_max and T_max)"
    );
    assert_eq!(
        msg(spec("demo:steps=1,stesp=2").apply(&mut Cfg::default())),
        "demo: unknown option(s) stesp (did you mean steps?); accepted: lr, steps, nesterov, t_max, betas, weight, mode, milestones"
    );
    let mut c = Cfg {
        steps: 4,
        ..Cfg::default()
    };
    let written = Spec::from_config("demo", &mut c)?;
    assert_eq!(
        written.to_string(),
        "demo:lr=0.001,steps=4,nesterov=false,t_max=none,betas=0.9;0.999,weight=none,mode=min,milestones=[]"
    );
    let mut back = Cfg::default();
    written.clone().apply(&mut back)?;
    assert_eq!(back, c);
    Ok(())
}

#[test]
fn docs_come_from_the_config() {
    let docs = OptionDoc::collect(&mut Cfg::default());
    let lines: Vec<String> = docs
        .iter()
        .map(|d| format!("{}={}", d.name, d.default.as_deref().unwrap_or("REQUIRED")))
        .collect();
    assert_eq!(
        lines,
        [
            "lr=0.001",
            "steps=REQUIRED",
            "nesterov=false",
            "t_max=none",
            "betas=0.9;0.999",
            "weight=none",
            "mode=min",
            "milestones=[]"
        ]
    );
    assert_eq!(
        docs.get(3).map(|d| d.aliases.clone()),
        Some(vec!["T_max".to_string()])
    );
}

#[test]
fn registry_finds_by_name_or_alias_and_resolves() -> Result<()> {
    let r = registry();
    assert_eq!(r.names(), ["demo-thing", "plain"]);
    let resolved = r.resolve(&"DemoThing:T_max=5,steps=2,lr=1e-2,nesterov=1".parse()?)?;
    assert_eq!(
        resolved.to_string(),
        "demo-thing:lr=0.01,steps=2,nesterov=true,t_max=5,betas=0.9;0.999,weight=none,mode=min,milestones=[]"
    );
    // Idempotent, and building from it gives the same component.
    assert_eq!(r.resolve(&resolved)?, resolved);
    assert_eq!(
        build(&r, "DemoThing:T_max=5,steps=2,lr=1e-2,nesterov=1")?,
        build(&r, &resolved.to_string())?
    );
    assert_eq!(r.resolve(&"plain".parse()?)?.to_string(), "plain");
    Ok(())
}

#[test]
fn registry_errors_come_before_the_builder() {
    let r = registry();
    assert_eq!(
        msg(build(&r, "demo-thng")),
        "unknown thing 'demo-thng' (did you mean 'demo-thing'?); accepted: demo-thing, plain"
    );
    assert_eq!(
        msg(build(&r, "demothing")),
        "unknown thing 'demothing' (did you mean 'DemoThing'?); accepted: demo-thing, plain"
    );
    assert_eq!(
        msg(build(&r, "warp")),
        "unknown thing 'warp'; accepted: demo-thing, plain"
    );
    assert_eq!(
        msg(build(&r, "LambdaLR")),
        "thing 'LambdaLR' is built from code, not from a spec string (needs a closure); accepted: demo-thing, plain"
    );
    assert_eq!(
        msg(build(&r, "demo-thing:steps=1,tmax=3,foo=1")),
        "demo-thing: unknown option(s) tmax (did you mean t_max?), foo; accepted: lr, steps, nesterov, t_max, betas, weight, mode, milestones"
    );
    assert_eq!(
        msg(build(&r, "plain:x=1")),
        "plain: unknown option(s) x; accepted: none"
    );
    assert_eq!(
        msg(build(&r, "demo-thing:steps=x")),
        "demo-thing: option steps=x is not a non-negative integer"
    );
    assert_eq!(
        msg(build(&r, "demo-thing:lr=0.1")),
        "demo-thing: option steps is required"
    );
    assert_eq!(
        msg(build(&r, "demo-thing:steps=1,t_max=1,T_max=2")),
        "demo-thing: option t_max is given twice (as t_max and T_max)"
    );
}

#[test]
fn register_replaces_and_describe_has_one_layout() {
    let mut r = registry();
    r.register(
        Entry::new(
            "plain",
            "replaced",
            Arc::new(|_: &mut Spec| Ok("new".to_string())) as Arc<Build>,
        )
        .option(OptionDoc::new("k", 2usize, "a count").alias("K"))
        .option(OptionDoc::required("who", String::new(), "a name")),
    );
    assert_eq!(r.names(), ["demo-thing", "plain"]);
    assert_eq!(
        msg(build(&r, "plain:who=me,K=x")),
        "plain: option K=x is not a non-negative integer"
    );
    assert_eq!(build(&r, "plain:who=me").ok().as_deref(), Some("new"));
    let text = r.describe();
    assert!(
        text.starts_with("Things (spec: NAME[:key=value,...]"),
        "{text}"
    );
    for want in [
        "\ndemo-thing (DemoThing)\n    a demo\n",
        "    lr=0.001                        learning rate\n",
        "    steps (required)                steps\n",
        "    t_max=none                      period (also T_max)\n",
        "\nplain\n    replaced\n    k=2                             a count (also K)\n",
        "    who (required)                  a name\n",
        "Built from code only (no spec string):\n    lambda (LambdaLR)               needs a closure\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
}

#[test]
fn suggestions() {
    let c = [
        "cross-entropy",
        "CrossEntropyLoss",
        "label_smoothing",
        "adam",
        "adamw",
    ];
    assert_eq!(suggest("cross-entropi", c), Some("cross-entropy"));
    assert_eq!(suggest("crossentropyloss", c), Some("CrossEntropyLoss"));
    assert_eq!(suggest("smoothing", c), Some("label_smoothing"));
    assert_eq!(suggest("adamm", c), Some("adam"));
    assert_eq!(suggest("sgd", c), None);
    assert_eq!(edit_distance("stesp", "steps"), 1);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert_eq!(edit_distance("", "abc"), 3);
}

#[test]
fn registries_can_be_shared_between_threads() {
    fn shared<T: Send + Sync + Clone>(_: &T) {}
    let r = registry();
    shared(&r);
    let spec: Spec = "demo-thing:steps=1".parse().unwrap_or_else(|_| spec("x"));
    shared(&spec);
}

/// The bracket rule: `,` and `;` separate only outside brackets; a value
/// wholly in brackets reads as the text inside; printing brackets exactly
/// what needs it, so printed specs parse back equal and resolve to fixed points.
#[test]
fn brackets_group_values_holding_separators() -> Result<()> {
    assert_eq!(
        split_outside_brackets("a, [b,c] ,d;[e;[f,g]]", ',')?,
        ["a", "[b,c]", "d;[e;[f,g]]"]
    );
    assert_eq!(split_outside_brackets("x;[y;z]", ';')?, ["x", "[y;z]"]);
    assert!(msg(split_outside_brackets("a,[b", ',')).contains("unbalanced brackets"));
    assert!(split_outside_brackets("a]", ',').is_err());
    for (text, inner) in [
        ("[a,b]", "a,b"),
        (" [[1;2]] ", "[1;2]"),
        ("[a];[b]", "[a];[b]"),
        ("[]", ""),
        ("plain", "plain"),
        ("[ spaced ]", " spaced "),
    ] {
        assert_eq!(unbracket(text), inner, "{text}");
    }

    // A path holding `,`: given in brackets, read without them.
    let mut s = spec("tensors:path=[data/a,b.safetensors],classes=3");
    assert_eq!(s.get("path"), Some("[data/a,b.safetensors]"));
    assert_eq!(
        s.value::<String>("path")?.as_deref(),
        Some("data/a,b.safetensors")
    );
    assert_eq!(
        s.to_string(),
        "tensors:path=[data/a,b.safetensors],classes=3"
    );
    assert!(msg("x:p=[a,b".parse::<Spec>()).contains("unbalanced brackets"));
    assert!(msg("x:[p]=1".parse::<Spec>()).contains("not keys"));

    // Every value reads one enclosing pair of brackets away.
    let norm = |mut v: Box<dyn OptionValue>, t: &str| -> std::result::Result<String, String> {
        v.parse_text(t)?;
        Ok(v.format_text())
    };
    assert_eq!(norm(Box::new(0.0f64), "[0.5]"), Ok("0.5".into()));
    assert_eq!(norm(Box::new(0usize), "[ 3 ]"), Ok("3".into()));
    assert_eq!(norm(Box::new(false), "[true]"), Ok("true".into()));
    assert_eq!(norm(Box::new(Mode::Min), "[max]"), Ok("max".into()));
    assert_eq!(
        norm(Box::<String>::default(), "[a,b;c]"),
        Ok("a,b;c".into())
    );
    // Text that is itself wholly bracketed, or has spaces at its ends, is
    // printed in brackets; `none` of an optional text likewise.
    assert_eq!(norm(Box::<String>::default(), "[[x]]"), Ok("[[x]]".into()));
    assert_eq!(norm(Box::<String>::default(), "[ x ]"), Ok("[ x ]".into()));
    assert_eq!(
        norm(Box::new(None::<String>), "[none]"),
        Ok("[none]".into())
    );
    assert_eq!(norm(Box::new(None::<String>), "none"), Ok("none".into()));
    // Lists: items holding `;` are bracketed, one bracketed item keeps its brackets.
    let strings = |t: &str| norm(Box::<Vec<String>>::default(), t);
    assert_eq!(strings("[a,b;[c;d];e]"), Ok("a,b;[c;d];e".into()));
    assert_eq!(strings("[[c;d]]"), Ok("[[c;d]]".into()));
    let lists = |t: &str| norm(Box::<Vec<Vec<f64>>>::default(), t);
    assert_eq!(lists("[1;2];[3]"), Ok("[1.0;2.0];3.0".into()));
    assert_eq!(lists("[[1;2]]"), Ok("[[1.0;2.0]]".into()));
    let mut one: Vec<Vec<f64>> = Vec::new();
    one.parse_text("[[1;2]]").map_err(Error::InvalidArgument)?;
    assert_eq!(one, vec![vec![1.0, 2.0]]);

    // Specs inside specs: a list of specs, one of which holds a list itself.
    let mut specs: Vec<Spec> = Vec::new();
    specs
        .parse_text("[linear:start_factor=0.1,total_iters=5;[adam:betas=0.9;0.95];cosine]")
        .map_err(Error::InvalidArgument)?;
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["linear", "adam", "cosine"]);
    assert_eq!(specs.get(1).and_then(|s| s.get("betas")), Some("0.9;0.95"));
    let mut outer = Spec::new("sequential")?;
    outer.set("schedulers", specs.format_text())?;
    outer.set("milestones", "5")?;
    let text = outer.to_string();
    assert_eq!(
        text,
        "sequential:schedulers=[linear:start_factor=0.1,total_iters=5;[adam:betas=0.9;0.95];cosine],milestones=5"
    );
    let back: Spec = text.parse()?;
    assert_eq!(back, outer);
    let mut again: Vec<Spec> = Vec::new();
    again
        .parse_text(back.get("schedulers").unwrap_or_default())
        .map_err(Error::InvalidArgument)?;
    assert_eq!(again, specs);
    Ok(())
}

/// An option holding specs of its own registry: resolving the outer spec
/// resolves the nested ones (names, aliases, defaults, errors), and the
/// result is a fixed point that builds the same thing.
#[test]
fn registries_resolve_nested_specs() -> Result<()> {
    struct Seq {
        parts: Vec<Spec>,
        at: Vec<usize>,
    }
    impl Options for Seq {
        fn options(&mut self, v: &mut dyn OptionVisitor) -> Result<()> {
            v.option(
                OptionInfo::new("parts", "specs").required(),
                &mut self.parts,
            )?;
            v.option(OptionInfo::new("at", "milestones"), &mut self.at)
        }
    }
    let mut r = registry();
    let build_seq: Arc<Build> = Arc::new(|s: &mut Spec| {
        let mut c = Seq {
            parts: Vec::new(),
            at: Vec::new(),
        };
        s.apply(&mut c)?;
        Ok(format!("{:?} at {:?}", c.parts, c.at))
    });
    r.register(
        Entry::new("seq", "a sequence", build_seq).options_of(&mut Seq {
            parts: Vec::new(),
            at: Vec::new(),
        }),
    );
    let resolved = r.resolve(
        &"seq:parts=[DemoThing:steps=2,T_max=3;plain;seq:parts=[plain]],at=[4;7]".parse()?,
    )?;
    assert_eq!(
        resolved.to_string(),
        "seq:parts=[[demo-thing:lr=0.001,steps=2,nesterov=false,t_max=3,betas=0.9;0.999,weight=none,mode=min,milestones=[]];plain;seq:parts=plain,at=[]],at=4;7"
    );
    assert_eq!(r.resolve(&resolved)?, resolved);
    assert_eq!(resolved.to_string().parse::<Spec>()?, resolved);
    assert_eq!(
        msg(r.resolve(&"seq:parts=[plain;demo-thng]".parse()?)),
        "seq: option parts: unknown thing 'demo-thng' (did you mean 'demo-thing'?); accepted: demo-thing, plain, seq"
    );
    assert_eq!(
        msg(r.resolve(&"seq:parts=[demo-thing]".parse()?)),
        "seq: option parts: demo-thing: option steps is required"
    );
    assert!(build(&r, &resolved.to_string())?.starts_with("[Spec { name: \"demo-thing\""));
    Ok(())
}
