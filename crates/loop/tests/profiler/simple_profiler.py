"""Lightning's SimpleProfiler(extended=True).summary() (lightning/pytorch/
profilers/simple.py, Lightning 2.x), its report and layout as written there,
fed each action's number of calls and total seconds (the mean is total /
calls) and the profiler's wall-clock duration instead of its recorded
lists. Lightning is not a dependency of the tests: only its layout and
number formats are reproduced.

stdin: {"stage": "fit", "actions": [[name, calls, total], ...], "wall": seconds}
stdout: the summary string, as Lightning returns it.
"""
import json
import os
import sys

spec = json.load(sys.stdin)
recorded = {name: (calls, total) for name, calls, total in spec["actions"] if calls > 0}
total_duration = spec["wall"]

sep = os.linesep
output_string = f"{spec['stage'].upper()} Profiler Report{sep}"
if len(recorded) > 0:
    max_key = max(len(k) for k in recorded)

    def log_row_extended(action, mean, num_calls, total, per):
        row = f"{sep}|  {action:<{max_key}s}\t|  {mean:<15}\t|"
        row += f"  {num_calls:<15}\t|  {total:<15}\t|  {per:<15}\t|"
        return row

    header_string = log_row_extended("Action", "Mean duration (s)", "Num calls", "Total time (s)", "Percentage %")
    output_string_len = len(header_string.expandtabs())
    sep_lines = f"{sep}{'-' * output_string_len}"
    output_string += sep_lines + header_string + sep_lines
    report = [(a, t / c, c, t, 100.0 * t / total_duration) for a, (c, t) in recorded.items()]
    report.sort(key=lambda x: x[4], reverse=True)
    total_calls = sum(x[2] for x in report)
    output_string += log_row_extended("Total", "-", f"{total_calls:}", f"{total_duration:.5}", "100 %")
    output_string += sep_lines
    for action, mean_duration, num_calls, total, duration_per in report:
        output_string += log_row_extended(
            action, f"{mean_duration:.5}", f"{num_calls}", f"{total:.5}", f"{duration_per:.5}"
        )
    output_string += sep_lines
output_string += sep
sys.stdout.write(output_string)
