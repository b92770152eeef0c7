"""Reference implementation of the A/B report's statistics, for the agreement test.

Reads events (JSON Lines) and the configured split (JSON), aggregates per user independently of
the Rust code, and computes every comparison with statsmodels and scipy where they have the
method (z-tests of means and their intervals, the chi-square goodness-of-fit test, the normal
distribution) and with numpy for the delta method and the mSPRT, which they do not provide.

usage: reference.py EVENTS.jsonl SPLIT.json ALPHA TAU_RELATIVE FROM_MS TO_MS > OUT.json
"""

import json
import sys
from collections import defaultdict

import numpy as np
from scipy import stats
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

QUANTITIES = ["requests", "filled", "impressions", "clicks", "installs", "revenue"]
MEANS = {"requests_per_user": ("requests", 1.0), "impressions_per_user": ("impressions", 1.0),
         "revenue_per_user": ("revenue", 1.0)}
RATIOS = {"fill_rate": ("filled", "requests", 1.0), "ctr": ("clicks", "impressions", 1.0),
          "install_rate": ("installs", "impressions", 1.0), "rpm": ("revenue", "impressions", 1000.0)}


def group_of(code):
    kind = code & 3
    if kind == 0:
        return "control"
    if kind == 1:
        return "staging"
    return "experiment-%d/arm-%d" % ((code >> 19) & 0xFFFFFFFF, (code >> 51) & 0xFFFFFFFF)


def per_user(path, from_ms, to_ms):
    users = defaultdict(lambda: defaultdict(lambda: np.zeros(6)))
    with open(path) as f:
        for line in f:
            e = json.loads(line)
            if not (from_ms <= e["time_unix_ms"] < to_ms):
                continue
            code = e["assignment_code"]
            if code & 4 or e["user_key"] is None:
                continue
            v = users[group_of(code)][e["user_key"]]
            kind = e["kind"]
            if kind == "decision":
                v[0] += 1
                v[1] += e["campaign_id"] != 0
            elif kind == "impression":
                v[2] += 1
            elif kind == "click":
                v[3] += 1
            elif kind == "install":
                v[4] += 1
            v[5] += e["revenue_micros"] / 1e6
    return {g: np.array(list(u.values())) for g, u in users.items()}


def estimate(metric, data):
    if metric in MEANS:
        q, scale = MEANS[metric]
        x = data[:, QUANTITIES.index(q)] * scale
        return x.mean(), x.var(ddof=1) / len(x)
    qx, qy, scale = RATIOS[metric]
    x = data[:, QUANTITIES.index(qx)]
    y = data[:, QUANTITIES.index(qy)]
    r = x.sum() / y.sum()
    cov = np.cov(x, y, ddof=1)
    var = (cov[0, 0] - 2 * r * cov[0, 1] + r * r * cov[1, 1]) / (len(x) * y.mean() ** 2)
    return scale * r, scale * scale * var


def msprt(diff, v, tau, alpha):
    t2 = tau * tau
    log_lambda = 0.5 * np.log(v / (v + t2)) + t2 * diff * diff / (2 * v * (v + t2))
    p = min(1.0, float(np.exp(-log_lambda)))
    half = np.sqrt(2 * v * (v + t2) / t2 * (np.log(1 / alpha) + 0.5 * np.log((v + t2) / v)))
    return p, [diff - half, diff + half]


def compare(metric, t, c, alpha, tau_rel):
    vt_val, vt = estimate(metric, t)
    vc_val, vc = estimate(metric, c)
    z = stats.norm.ppf(1 - alpha / 2)
    if metric in MEANS:
        q, scale = MEANS[metric]
        cm = CompareMeans(DescrStatsW(t[:, QUANTITIES.index(q)] * scale),
                          DescrStatsW(c[:, QUANTITIES.index(q)] * scale))
        _, p = cm.ztest_ind(usevar="unequal")
        ci = list(cm.zconfint_diff(alpha=alpha, usevar="unequal"))
        diff = vt_val - vc_val
        se = np.sqrt(vt + vc)
    else:
        diff = vt_val - vc_val
        se = np.sqrt(vt + vc)
        p = 2 * stats.norm.sf(abs(diff) / se)
        ci = [diff - z * se, diff + z * se]
    ratio = vt_val / vc_val
    se_rel = np.sqrt(vt / vc_val ** 2 + ratio ** 2 * vc / vc_val ** 2)
    p_av, ci_av = msprt(diff, se * se, tau_rel * abs(vc_val), alpha)
    return {"control": vc_val, "treatment": vt_val, "diff_abs": diff, "ci_abs": ci, "p_value": float(p),
            "diff_rel": ratio - 1, "ci_rel": [ratio - 1 - z * se_rel, ratio - 1 + z * se_rel],
            "p_value_always_valid": p_av, "ci_abs_always_valid": ci_av}


def srm(observed, shares):
    shares = np.array(shares, dtype=float)
    expected = sum(observed) * shares / shares.sum()
    result = stats.chisquare(observed, f_exp=expected)
    return {"statistic": float(result.statistic), "p_value": float(result.pvalue)}


def main():
    events, split_path, alpha, tau_rel, from_ms, to_ms = sys.argv[1:7]
    alpha, tau_rel = float(alpha), float(tau_rel)
    data = per_user(events, int(from_ms), int(to_ms))
    split = json.load(open(split_path))
    control = data["control"]
    out = {"comparisons": {}, "srm": {}, "n_users": {g: len(d) for g, d in data.items()}}
    for group, d in data.items():
        if group != "control":
            out["comparisons"][group] = {m: compare(m, d, control, alpha, tau_rel) for m in list(MEANS) + list(RATIOS)}
    control_bp = 10000 - sum(x["share_bp"] for x in split["experiments"])
    for x in split["experiments"]:
        arms = sorted(x["arms"], key=lambda a: a["id"])
        observed = [len(data.get("experiment-%d/arm-%d" % (x["id"], a["id"]), [])) for a in arms] + [len(control)]
        shares = [x["share_bp"] * a["weight_bp"] for a in arms] + [control_bp * 10000]
        out["srm"][str(x["id"])] = srm(observed, shares)
    staging_bp = split["staging_share_bp"]
    out["srm"]["staging"] = srm([len(data["staging"]), len(control)],
                                [staging_bp, (10000 - staging_bp) * control_bp / 10000])
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
