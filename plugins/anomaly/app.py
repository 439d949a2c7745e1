"""`anomaly`: learns what each campaign's and each device type's figures usually are, window
after window, and publishes an alert to `ad-anomalies` when a window's figure is out of line.

It reads the published results of `ctr` (per campaign: impressions, clicks, CTR) and
`engagement` (per device type: impressions, unique users). For every key and metric it keeps an
exponentially weighted mean and variance of the metric over the windows:

| entity   | metric                 | alerts                                      |
|----------|------------------------|---------------------------------------------|
| campaign | `ctr`                  | `ctr-collapse`, `ctr-spike`                 |
| campaign | `impressions`          | `traffic-drop`, `traffic-surge`             |
| device   | `impressions`          | `traffic-drop`, `traffic-surge`             |
| device   | `users_per_impression` | `unique-users-low` (bots), `unique-users-high` |

A window's figure `x` is anomalous when, after `warm-up` windows of that key and metric, its
score `(x - mean) / sd` is at least `threshold` in size and it differs from the mean by at least
`min-change` of the mean. `sd` is never taken below the noise that counting alone makes (binomial
for a rate over `n` impressions, Poisson for a count), so a quiet baseline does not turn
sampling noise into alerts. A rate is only judged over at least `min-impressions` impressions,
both in the window and in the baseline. A key with a baseline that publishes nothing in a window
where its plugin published has 0 impressions there (a traffic drop).

An anomalous figure is not folded into the baseline, so the alert repeats while the deviation
lasts; after `relearn-after` anomalous windows in a row, the baseline is dropped and learnt again
from the new level (it warms up again).

Settings (`adstream run --plugin-setting anomaly:KEY=VALUE`, repeatable):
`alpha` (0.1), `warm-up` (10 windows), `threshold` (5.0), `min-change` (0.3),
`min-impressions` (200), `relearn-after` (10).

Each alert, keyed by the campaign or device type:
`{"window_start", "window_end", "entity", "key", "metric", "kind", "observed", "expected",
"score", "baseline_windows"}`.
"""

import json
import math

from adstream_sdk import rfc3339_ms
from adstream_sdk.detector import Detector, detector, setting

# Metric -> (alert when below, alert when above).
_KINDS = {
    "ctr": ("ctr-collapse", "ctr-spike"),
    "impressions": ("traffic-drop", "traffic-surge"),
    "users_per_impression": ("unique-users-low", "unique-users-high"),
}


class Anomaly(Detector):
    def __init__(self, settings):
        known = {"alpha", "warm-up", "threshold", "min-change", "min-impressions", "relearn-after"}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        self.alpha = setting(settings, "alpha", 0.1, float, lambda a: 0 < a <= 1)
        self.warm_up = setting(settings, "warm-up", 10, int, lambda n: n >= 1)
        self.threshold = setting(settings, "threshold", 5.0, float, lambda t: t > 0)
        self.min_change = setting(settings, "min-change", 0.3, float, lambda c: c >= 0)
        self.min_impressions = setting(settings, "min-impressions", 200, int, lambda n: n >= 1)
        self.relearn_after = setting(settings, "relearn-after", 10, int, lambda n: n >= 1)
        # "campaign" / "device" -> key -> metric -> [windows, mean, variance, anomalous in a row]
        self.baselines = {"campaign": {}, "device": {}}

    def observe(self, window, results):
        campaigns, devices = {}, {}
        for r in results:
            if r.plugin == "ctr":
                campaigns[r.key] = r.value
            elif r.plugin == "engagement":
                devices[r.key] = r.value
        alerts = []
        if any(r.plugin == "ctr" for r in results):
            self._entity(window, "campaign", campaigns, alerts)
        if any(r.plugin == "engagement" for r in results):
            self._entity(window, "device", devices, alerts)
        return alerts

    def _entity(self, window, entity, records, alerts):
        known = self.baselines[entity]
        for key in sorted(set(records) | set(known)):
            value = records.get(key)
            impressions = value["impressions"] if value else 0
            metrics = {"impressions": (float(impressions), "count", impressions)}
            if value and entity == "campaign" and value["ctr"] is not None:
                metrics["ctr"] = (value["ctr"], "rate", impressions)
            if value and entity == "device" and impressions > 0:
                metrics["users_per_impression"] = (value["unique_users"] / impressions, "rate", impressions)
            for metric, (x, noise, n) in metrics.items():
                alert = self._judge(known.setdefault(key, {}), metric, x, noise, n)
                if alert is not None:
                    observed, expected, score, windows = alert
                    kind = _KINDS[metric][0 if observed < expected else 1]
                    alerts.append(
                        (
                            key,
                            {
                                "window_start": rfc3339_ms(window.start_ms),
                                "window_end": rfc3339_ms(window.end_ms),
                                "entity": entity,
                                "key": key,
                                "metric": metric,
                                "kind": kind,
                                "observed": observed,
                                "expected": expected,
                                "score": round(score, 3),
                                "baseline_windows": windows,
                            },
                        )
                    )

    def _judge(self, metrics, metric, x, noise, n):
        """Checks `x` against the baseline of `metric`, then learns from it; returns the alert
        (observed, expected, score, baseline windows) if `x` is anomalous."""
        b = metrics.get(metric)
        if b is None:
            b = metrics[metric] = [0, 0.0, 0.0, 0]
        count, mean, var, streak = b
        if noise == "rate" and n < self.min_impressions:
            return None  # too few impressions to judge a rate, or to learn from it
        alert = None
        if count >= self.warm_up and (noise == "count" and mean >= self.min_impressions or noise == "rate"):
            floor = mean if noise == "count" else mean * (1 - mean) / n
            sd = math.sqrt(max(var, floor, 1e-12))
            score = (x - mean) / sd
            if abs(score) >= self.threshold and abs(x - mean) >= self.min_change * abs(mean):
                alert = (x, mean, score, count)
        if alert is not None:
            b[3] = streak + 1
            if b[3] >= self.relearn_after:
                metrics[metric] = [0, 0.0, 0.0, 0]  # a new level: learn it afresh
            return alert
        # Learn: a plain mean over the first windows, then exponentially weighted.
        weight = max(self.alpha, 1.0 / (count + 1))
        diff = x - mean
        mean += weight * diff
        var = (1 - weight) * (var + weight * diff * diff)
        metrics[metric] = [count + 1, mean, var, 0]
        return None

    # The state is JSON: Python writes floats so that they read back to the same bits, so a
    # restored detector scores exactly as the one that saved it.
    def save(self):
        return json.dumps(self.baselines, sort_keys=True, separators=(",", ":")).encode("utf-8")

    def load(self, data):
        baselines = json.loads(data.decode("utf-8"))
        if set(baselines) != {"campaign", "device"}:
            raise ValueError("not a state of anomaly (state version 1)")
        self.baselines = baselines


WitWorld = detector(
    Anomaly,
    name="anomaly",
    version="0.1.0",
    description="alerts when a campaign's CTR or traffic, or a device type's traffic or unique users, leaves its usual range",
    inputs=["ctr", "engagement"],
    outputs=["ad-anomalies"],
    state_version=1,
)
