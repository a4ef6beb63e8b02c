import assert from "node:assert/strict";
import { counter, gauge, renderMetrics } from "./metrics.ts";

Deno.test("metrics: Prometheus text with HELP, TYPE, labels escaped, special values", () => {
  const text = renderMetrics([
    gauge("a_b", "A gauge.\nSecond line \\ here.", 1.5),
    counter("c_total", "A counter.", 7),
    {
      name: "d",
      help: "Labelled.",
      type: "gauge",
      values: [
        { labels: { level: "0" }, value: 3 },
        { labels: { path: 'a"b\\c\nd', x: "y" }, value: NaN },
        { value: Infinity },
      ],
    },
  ]);
  assert.equal(
    text,
    [
      "# HELP a_b A gauge.\\nSecond line \\\\ here.",
      "# TYPE a_b gauge",
      "a_b 1.5",
      "# HELP c_total A counter.",
      "# TYPE c_total counter",
      "c_total 7",
      "# HELP d Labelled.",
      "# TYPE d gauge",
      'd{level="0"} 3',
      'd{path="a\\"b\\\\c\\nd",x="y"} NaN',
      "d +Inf",
      "",
    ].join("\n"),
  );
  assert.throws(() => renderMetrics([gauge("bad-name", "x", 1)]), /bad metric name/);
});
