"""Reads TensorBoard logs with TensorBoard's own Python code, and writes the
PyTorch reference logs, for crates/loop/tests/tensorboard.rs.

    read_events.py dump LOGDIR
        Prints one JSON object describing every run (directory with event
        files) under LOGDIR, as TensorBoard reads it:
          files      run -> event file names, in reading order
          records    run -> every event of every file, decoded by the
                     `tensorboard` package's record reader (which checks both
                     CRCs) and protobuf classes; wall_time left out, plugin
                     contents decoded; `tail` says how each file ended
          scalars / histograms / texts
                     run -> tag -> [[step, value], ...] from EventAccumulator
                     (SessionLog.START purges applied)
          server_scalars / server_histograms
                     the same through the multiplexer and data provider the
                     TensorBoard server's dashboards read
          session_groups
                     what the HParams tab lists (its ListSessionGroups handler)

    read_events.py pytorch SPEC.json OUTDIR [TENSORS.safetensors]
        Writes SPEC's sessions with torch.utils.tensorboard.SummaryWriter into
        OUTDIR. SPEC: {"sessions": [{"purge_step": int|null, "ops": [...]}]},
        each op one of
          {"op": "scalar", "tag", "value", "step"}
          {"op": "histogram", "tag", "tensor" (name in TENSORS), "step"}
          {"op": "text", "tag", "text", "step"}
          {"op": "hparams", "hparams": {...}, "metrics": {...}, "run_name", "step"}

Non-finite floats are printed as the strings "NaN", "inf", "-inf".
Needs `tensorboard`, `protobuf`, `absl-py`, `numpy` (and torch + safetensors
for `pytorch`): scripts/setup.sh installs them next to torch in `.libtorch`.
"""

import base64
import json
import math
import os
import sys


def clean(x):
    if isinstance(x, float) and not math.isfinite(x):
        return "NaN" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    return x


def runs_under(logdir):
    runs = []
    for dirpath, _, files in os.walk(logdir):
        if any("tfevents" in f for f in files):
            rel = os.path.relpath(dirpath, logdir)
            runs.append(rel)
    return sorted(runs)


def event_names(path):
    return sorted(f for f in os.listdir(path) if "tfevents" in f)


def decode_content(value):
    from google.protobuf import json_format
    from tensorboard.plugins.hparams import plugin_data_pb2 as hp
    from tensorboard.plugins.text import plugin_data_pb2 as text

    md = value.get("metadata", {}).get("plugin_data")
    if not md or "content" not in md:
        return
    raw = base64.b64decode(md.pop("content"))
    name = md.get("plugin_name")
    msg = {"hparams": hp.HParamsPluginData, "text": text.TextPluginData}.get(name)
    if msg is None:
        md["content_base64"] = base64.b64encode(raw).decode()
        return
    m = msg()
    m.ParseFromString(raw)
    md["content_decoded"] = json_format.MessageToDict(
        m, preserving_proto_field_name=True
    )


def records(path):
    from google.protobuf import json_format
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.tensorflow_stub import errors
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import (
        PyRecordReader_New,
    )

    reader = PyRecordReader_New(path)
    events = []
    tail = "ok"
    while True:
        try:
            reader.GetNext()
        except errors.OutOfRangeError:
            break
        except errors.DataLossError as e:
            tail = "truncated" if "truncated" in str(e) else "corrupt: " + str(e)
            break
        ev = event_pb2.Event()
        ev.ParseFromString(reader.record())
        d = json_format.MessageToDict(ev, preserving_proto_field_name=True)
        d.pop("wall_time", None)
        for v in d.get("summary", {}).get("value", []):
            decode_content(v)
        events.append(d)
    return events, tail


def accumulator_views(path):
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.util import tensor_util

    acc = ea.EventAccumulator(
        path,
        size_guidance={
            ea.SCALARS: 0,
            ea.HISTOGRAMS: 0,
            ea.TENSORS: 0,
            ea.COMPRESSED_HISTOGRAMS: 0,
        },
    )
    acc.Reload()
    tags = acc.Tags()
    scalars = {t: [[e.step, e.value] for e in acc.Scalars(t)] for t in tags["scalars"]}
    histograms = {}
    for t in tags["histograms"]:
        rows = []
        for e in acc.Histograms(t):
            h = e.histogram_value
            rows.append(
                [
                    e.step,
                    {
                        "min": h.min,
                        "max": h.max,
                        "num": h.num,
                        "sum": h.sum,
                        "sum_squares": h.sum_squares,
                        "bucket_limit": list(h.bucket_limit),
                        "bucket": list(h.bucket),
                    },
                ]
            )
        histograms[t] = rows
    texts = {}
    for t in tags["tensors"]:
        rows = []
        for e in acc.Tensors(t):
            arr = tensor_util.make_ndarray(e.tensor_proto)
            if arr.dtype.kind in "SO":
                rows.append([e.step, [s.decode() for s in arr.reshape(-1)]])
        if rows:
            texts[t] = rows
    return scalars, histograms, texts


def server_views(logdir):
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider
    from tensorboard.backend.event_processing import plugin_event_multiplexer as pem
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups
    from google.protobuf import json_format

    mux = pem.EventMultiplexer(size_guidance={"tensors": 0, "scalars": 0})
    mux.AddRunsFromDirectory(logdir)
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, logdir)
    ctx = context.RequestContext()
    big = 10**9
    scalars = provider.read_scalars(
        ctx, experiment_id="", plugin_name="scalars", downsample=big
    )
    server_scalars = {
        run: {tag: [[d.step, d.value] for d in data] for tag, data in tags.items()}
        for run, tags in scalars.items()
    }
    hist = provider.read_tensors(
        ctx, experiment_id="", plugin_name="histograms", downsample=big
    )
    server_histograms = {
        run: {
            tag: [[d.step, d.numpy.tolist()] for d in data]
            for tag, data in tags.items()
        }
        for run, tags in hist.items()
    }
    tb = base_plugin.TBContext(data_provider=provider, logdir=logdir)
    request = api_pb2.ListSessionGroupsRequest(
        start_index=0,
        slice_size=1000,
        allowed_statuses=[
            api_pb2.STATUS_UNKNOWN,
            api_pb2.STATUS_SUCCESS,
            api_pb2.STATUS_FAILURE,
            api_pb2.STATUS_RUNNING,
        ],
    )
    response = list_session_groups.Handler(
        ctx, backend_context.Context(tb), "", request
    ).run()
    groups = json_format.MessageToDict(response, preserving_proto_field_name=True)
    return server_scalars, server_histograms, groups.get("session_groups", [])


def dump(logdir):
    out = {
        "files": {},
        "records": {},
        "tails": {},
        "scalars": {},
        "histograms": {},
        "texts": {},
    }
    for run in runs_under(logdir):
        path = os.path.join(logdir, run)
        names = event_names(path)
        out["files"][run] = names
        out["records"][run] = []
        out["tails"][run] = []
        for name in names:
            events, tail = records(os.path.join(path, name))
            out["records"][run].extend(events)
            out["tails"][run].append(tail)
        s, h, t = accumulator_views(path)
        out["scalars"][run], out["histograms"][run], out["texts"][run] = s, h, t
    s, h, g = server_views(logdir)
    out["server_scalars"], out["server_histograms"], out["session_groups"] = s, h, g
    json.dump(clean(out), sys.stdout)


def pytorch(spec_path, outdir, tensors_path=None):
    from torch.utils.tensorboard import SummaryWriter

    with open(spec_path) as f:
        spec = json.load(f)
    tensors = {}
    if tensors_path:
        from safetensors.torch import load_file

        tensors = load_file(tensors_path)
    for session in spec["sessions"]:
        w = SummaryWriter(outdir, purge_step=session.get("purge_step"))
        for op in session["ops"]:
            kind = op["op"]
            if kind == "scalar":
                w.add_scalar(op["tag"], op["value"], op["step"])
            elif kind == "histogram":
                w.add_histogram(op["tag"], tensors[op["tensor"]], op["step"])
            elif kind == "text":
                w.add_text(op["tag"], op["text"], op["step"])
            elif kind == "hparams":
                w.add_hparams(
                    op["hparams"],
                    op["metrics"],
                    run_name=op["run_name"],
                    global_step=op["step"],
                )
            else:
                raise ValueError("unknown op " + kind)
        w.close()


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "dump":
        dump(sys.argv[2])
    elif len(sys.argv) in (4, 5) and sys.argv[1] == "pytorch":
        pytorch(*sys.argv[2:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
