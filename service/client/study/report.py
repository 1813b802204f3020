"""A study's report, rebuilt from the service's API (the leaderboard, the runs' artifacts): every
table, figure and verdict; nothing in a report is typed by hand.

Verdicts compare two cells (mean, std over n seeds): a difference beyond two standard errors
(sqrt(s_a^2/n_a + s_b^2/n_b)) counts as better or worse, anything inside is a tie; one seed
gives no verdict. The rule is fixed here, before any result is seen, and the same for every claim."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from service.client.study.cells import SYMBOL, Cell, caption, comparable_rows, compare, grid, label, study_wall_time, wall_time
from service.client.study.schema import Section, Study
from service.web.plots import metric_vs_steps, metric_vs_training


class Source:
    """Reads what the report needs through the API (SNRLAB_URL, SNRLAB_TOKEN), or any client
    with the same `get(path, params)` (tests pass the FastAPI TestClient)."""

    def __init__(self, client):
        self.client = client

    def _post(self, path: str, body: dict) -> Any:
        r = self.client.post(path, json=body)
        if r.status_code >= 400:
            raise RuntimeError(f"POST {path}: HTTP {r.status_code}: {r.text[:300]}")
        return r.json()

    def _get(self, path: str, **params) -> Any:
        r = self.client.get(path, params=params)
        if r.status_code >= 400:
            raise RuntimeError(f"GET {path}: HTTP {r.status_code}: {r.text[:300]}")
        return r.json() if "json" in r.headers.get("content-type", "") else r.content

    def experiment_for(self, spec: dict) -> dict | None:
        """The newest experiment with this spec (same name and canonical hash, as the service
        computes it: POST /experiments:validate); succeeded first."""
        wanted = self._post("/experiments:validate", spec)["spec_hash"]
        found = []
        offset = 0
        while True:
            page = self._get("/experiments", limit=200, offset=offset)
            for item in page["items"]:
                if item["name"] == spec["name"]:
                    exp = self._get(f"/experiments/{item['id']}")
                    if exp["spec_hash"] == wanted:
                        found.append(exp)
            offset += len(page["items"])
            if not page["items"] or offset >= page["total"]:
                break
        found.sort(key=lambda e: (e["status"] == "succeeded", e["created_at"]), reverse=True)
        return found[0] if found else None

    def leaderboard(self, experiment_id: str) -> dict:
        return self._get("/leaderboard", experiment=experiment_id, train_steps="all")

    def analyses(self, run_id: str) -> dict | None:
        try:
            body = self._get(f"/runs/{run_id}/artifacts/analyses.json")
        except RuntimeError:
            return None
        return json.loads(body) if isinstance(body, bytes) else body


# ---------------------------------------------------------------- figures


def _plt():
    import matplotlib  # heavy: only when a report draws its figures

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # (after the Agg backend is chosen)

    return plt


def figure_mse_vs_t(curves: dict[str, dict], path: Path) -> None:
    """Fig. 4: MSE(eps_hat, eps) per weighting (mean over seeds) against the Initial curve."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    initial = None
    for w, c in sorted(curves.items()):
        ax.plot(c["t"], c["mse_model"], label=w)
        initial = c
    if initial is not None:
        ax.plot(initial["t"], initial["mse_initial"], label="Initial: MSE(x_t, eps)", color="black", ls="--")
    ax.set_xlabel("t"), ax.set_ylabel("MSE"), ax.set_yscale("log"), ax.legend(fontsize=7)
    fig.tight_layout(), fig.savefig(path, dpi=90), plt.close(fig)


# ---------------------------------------------------------------- the report


class Report:
    def __init__(self, study: Study, specs: dict[str, dict], source: Source, figures_dir: Path, figures_link: str):
        self.study, self.specs, self.source = study, specs, source
        self.figures_dir, self.figures_link = figures_dir, figures_link.rstrip("/")
        self.out: list[str] = []
        self.verdicts: list[tuple[str, str, str]] = []
        self.excluded: list[str] = []
        self.exps: dict[str, dict | None] = {k: source.experiment_for(spec) for k, spec in specs.items()}
        self.boards = {k: source.leaderboard(e["id"]) for k, e in self.exps.items() if e is not None}

    def p(self, *lines: str) -> None:
        self.out.extend(lines)

    def fig(self, name: str) -> tuple[Path, str]:
        self.figures_dir.mkdir(parents=True, exist_ok=True)
        return self.figures_dir / name, f"{self.figures_link}/{name}"

    def verdict(self, section: Section, verdict: str, reason: str) -> None:
        self.verdicts.append((f"{section.id}: {section.title}", verdict, reason))
        self.p(f"**Verdict: {verdict}.** {reason}", "")

    def render(self) -> str:
        s = self.study
        self.p(f"# {s.title}", "", "<!-- generated by `snrlab report --study ...`; do not edit by hand -->", "")
        if s.description:
            self.p(s.description.strip(), "")
        if s.budget:
            self.p(f"**Budget.** {s.budget.strip()}", "")
        self.p("## Experiments", "", "| key | experiment | status | runs | wall time | spec |", "|---|---|---|---|---|---|")
        for key, exp in self.exps.items():
            spec_file = self.study.experiments[key]
            if exp is None:
                self.p(f"| {key} | not submitted | – | – | – | `studies/{spec_file}` |")
            else:
                self.p(f"| {key} | `{exp['id']}` | {exp['status']} | {len(exp['run_ids'])} | {wall_time(exp)} | `studies/{spec_file}` |")
        total = study_wall_time([e for e in self.exps.values() if e is not None])
        if total:
            self.p("", f"The whole study, from its first submission to its last finished run: {total}.")
        self.p("", "Comparisons: a difference beyond two standard errors of the seed means counts as better or worse; "
                   "inside it, a tie. Lower is better for every metric here.", "")
        body_start = len(self.out)
        for section in s.sections:
            self.p(f"## {section.id}. {section.title}", "", f"*Claim:* {section.claim}", "")
            board = self.boards.get(section.experiment)
            if board is None or not board["rows"]:
                self.verdict(section, "inconclusive", f"experiment {section.experiment} has no results yet.")
                continue
            section = section.model_copy(update={
                "baseline": label(section.baseline, board), "method": label(section.method, board),
                "weightings": [label(w, board) for w in section.weightings]})
            getattr(self, f"_{section.kind}")(section, board)
        summary = ["## Summary", "", "| claim | verdict | why |", "|---|---|---|"]
        summary += [f"| {title} | **{v}** | {reason} |" for title, v, reason in self.verdicts]
        if self.excluded:
            summary += ["", "Left out as not comparable (scored with another copy of the feature extractor):", ""]
            summary += [f"- {e}" for e in sorted(set(self.excluded))]
        self.out[body_start:body_start] = summary + [""]
        return "\n".join(self.out).rstrip() + "\n"

    # ------------------------------------------------------------ sections
    def _table(self, cells: dict[tuple[int, int], dict[str, Cell]], weightings: list[str], key_name: str,
               keys: list[tuple[int, int]], label) -> None:
        self.p("| " + key_name + " | " + " | ".join(weightings) + " |", "|---" * (len(weightings) + 1) + "|")
        for k in keys:
            row = cells.get(k, {})
            best = min((c.mean for w, c in row.items() if w in weightings), default=None)
            texts = [("**" + row[w].text() + "**" if row[w].mean == best else row[w].text()) if w in row else "–" for w in weightings]
            self.p(f"| {label(k)} | " + " | ".join(texts) + " |")
        self.p("")

    def _training_length(self, section: Section, board: dict) -> None:
        metric = section.metric or board["rows"][0]["metric"]
        cells = grid(board, metric, excluded=self.excluded)
        steps = sorted({s for s, _ in cells})
        ts = sorted({t for _, t in cells})
        weightings = [w for w in board["columns"]]
        path, link = self.fig(f"{self.study.name}_{section.id}_vs_training.png")
        path.write_bytes(metric_vs_training(comparable_rows(board, metric), board["columns"],
                                            metric=metric, title=f"{metric} against training steps"))
        self.p(f"![{metric} against training steps]({link})", "", f"Final checkpoint ({steps[-1]} steps); {caption(board, metric)}:", "")
        self._table(cells, weightings, "T", [(steps[-1], t) for t in ts], lambda k: str(k[1]))
        self.p(f"{section.method} against {section.baseline}, per training step (rows) and T (columns):", "",
               "| steps | " + " | ".join(f"T={t}" for t in ts) + " |", "|---" * (len(ts) + 1) + "|")
        outcome: dict[int, list[str]] = {}
        for s in steps:
            outcome[s] = [compare(cells.get((s, t), {}).get(section.method), cells.get((s, t), {}).get(section.baseline)) for t in ts]
            self.p(f"| {s} | " + " | ".join(SYMBOL[o] for o in outcome[s]) + " |")
        self.p("")
        final = outcome[steps[-1]]
        overtakes = [s for s in steps if outcome[s].count("better") > len(ts) / 2 and "worse" not in outcome[s]]
        if "n/a" in final:
            self.verdict(section, "inconclusive", "fewer than two seeds per cell.")
        elif final.count("better") > len(ts) / 2 and "worse" not in final:
            self.verdict(section, "reproduced", f"at {steps[-1]} steps {section.method} beats {section.baseline} at "
                                                f"{final.count('better')} of {len(ts)} T and is never worse; it first does so at {overtakes[0]} steps.")
        elif final.count("worse") > len(ts) / 2:
            when = f"; it overtakes at {overtakes[0]} steps only" if overtakes else "; at no evaluated training length does it overtake"
            self.verdict(section, "not reproduced", f"at {steps[-1]} steps {section.method} is worse than {section.baseline} at "
                                                    f"{final.count('worse')} of {len(ts)} T{when} (up to {steps[-1]} steps of a tiny UNet, "
                                                    "far short of the paper's 500k).")
        else:
            self.verdict(section, "inconclusive", f"at {steps[-1]} steps: {final.count('better')} better, {final.count('worse')} worse, "
                                                  f"{final.count('tie')} ties of {len(ts)} T.")

    def _hybrid(self, section: Section, board: dict) -> None:
        metric = section.metric or board["rows"][0]["metric"]
        hyb = grid(board, metric, excluded=self.excluded)
        plain = grid(self.boards.get(section.compare_to, {"rows": []}), metric, excluded=self.excluded)
        final = max(s for s, _ in hyb)
        ts = sorted({t for s, t in hyb if s == final})
        weightings = [w for w in board["columns"]]
        self.p(f"Hybrid (`learn_sigma`, unweighted VB term), {final} steps; {caption(board, metric)}:", "")
        self._table(hyb, weightings, "T", [(final, t) for t in ts], lambda k: str(k[1]))
        rows = []
        for t in ts:
            h = compare(hyb.get((final, t), {}).get(section.method), hyb.get((final, t), {}).get(section.baseline))
            p = compare(plain.get((final, t), {}).get(section.method), plain.get((final, t), {}).get(section.baseline))
            rescue = compare(hyb.get((final, t), {}).get(section.method), plain.get((final, t), {}).get(section.method))
            rows.append((t, p, h, rescue))
        self.p(f"| T | {section.method} vs {section.baseline}, plain ({section.compare_to}) | {section.method} vs "
               f"{section.baseline}, hybrid | hybrid {section.method} vs plain {section.method} |", "|---|---|---|---|")
        for t, p, h, r in rows:
            self.p(f"| {t} | {SYMBOL[p]} | {SYMBOL[h]} | {SYMBOL[r]} |")
        self.p("")
        helped = sum(r == "better" for *_, r in rows)
        if any("n/a" in row for row in rows):
            self.verdict(section, "inconclusive", f"missing cells or a single seed (plain experiment {section.compare_to} needs the same steps and T).")
        elif helped > len(ts) / 2 and sum(h == "worse" for _, _, h, _ in rows) < sum(p == "worse" for _, p, _, _ in rows):
            self.verdict(section, "reproduced", f"the VB term improves {section.method} at {helped} of {len(ts)} T and narrows its gap to {section.baseline}.")
        elif helped == 0:
            self.verdict(section, "not reproduced", f"the VB term improves {section.method} at no T.")
        else:
            self.verdict(section, "inconclusive", f"the VB term improves {section.method} at {helped} of {len(ts)} T, without closing the gap to {section.baseline}.")

    def _colour_shift(self, section: Section, board: dict) -> None:
        metrics = [section.metric] if section.metric else sorted({r["metric"] for r in board["rows"]})
        outcome = []
        for metric in metrics:
            cells = grid(board, metric, excluded=self.excluded)
            final = max(s for s, _ in cells)
            ts = sorted({t for s, t in cells if s == final})
            weightings = [w for w in board["columns"]]
            self.p(f"{caption(board, metric)}:", "")
            self._table(cells, weightings, "T", [(final, t) for t in ts], lambda k: str(k[1]))
            path, link = self.fig(f"{self.study.name}_{section.id}_{metric}.png")
            final_rows = [r for r in comparable_rows(board, metric) if r["train_step"] == final]
            path.write_bytes(metric_vs_steps(final_rows, weightings, metric=metric, title=f"{metric} at few sampling steps"))
            self.p(f"![{metric} against T]({link})", "")
            outcome += [compare(cells[(final, t)].get(section.method), cells[(final, t)].get(section.baseline)) for t in ts]
        b, w = outcome.count("better"), outcome.count("worse")
        if "n/a" in outcome:
            self.verdict(section, "inconclusive", "missing cells or a single seed.")
        elif b > len(outcome) / 2 and w == 0:
            self.verdict(section, "reproduced", f"{section.method} shifts colour less than {section.baseline} in {b} of {len(outcome)} (metric, T) cells, never more.")
        elif w > len(outcome) / 2:
            self.verdict(section, "not reproduced", f"{section.method} shifts colour more than {section.baseline} in {w} of {len(outcome)} (metric, T) cells.")
        else:
            self.verdict(section, "inconclusive", f"{b} better, {w} worse, {len(outcome) - b - w} ties over {len(outcome)} (metric, T) cells.")

    def _bias_analysis(self, section: Section, board: dict) -> None:
        exp = self.exps[section.experiment]
        weightings = section.weightings or [section.baseline, section.method]
        per_w: dict[str, list[dict]] = defaultdict(list)
        for run in exp["runs"]:
            if run["weighting"] in weightings and run["status"] == "succeeded":
                a = self.source.analyses(run["id"])
                if a:
                    per_w[run["weighting"]].append(a)
        if not all(per_w.get(w) for w in weightings):
            self.verdict(section, "inconclusive", f"no analyses.json for {', '.join(w for w in weightings if not per_w.get(w))}.")
            return
        curves, worse, one_step = {}, {}, {}
        for w, items in per_w.items():
            ts = items[0]["mse_vs_t"]["t"]
            mean = lambda key: [sum(a["mse_vs_t"][key][i] for a in items) / len(items) for i in range(len(ts))]  # noqa: E731
            curves[w] = {"t": ts, "mse_model": mean("mse_model"), "mse_initial": mean("mse_initial")}
            worse[w] = [t for t, m, i in zip(ts, curves[w]["mse_model"], curves[w]["mse_initial"]) if m > i]
            steps = items[0]["one_step_estimation"]["per_t"]
            one_step[w] = {t: sum(a["one_step_estimation"]["per_t"][t]["mse_x0"] for a in items) / len(items) for t in steps}
        path, link = self.fig(f"{self.study.name}_{section.id}_mse_vs_t.png")
        figure_mse_vs_t(curves, path)
        n = min(len(v) for v in per_w.values())
        self.p(f"MSE of the eps prediction against t, mean over {n} seeds, beside Initial (x_t taken as the prediction) "
               f"— the paper's Fig. 4:", "", f"![MSE against t]({link})", "")
        self.p("| weighting | t where worse than Initial | share of evaluated t |", "|---|---|---|")
        for w in weightings:
            ts = curves[w]["t"]
            span = f"{min(worse[w])}–{max(worse[w])}" if worse[w] else "none"
            self.p(f"| {w} | {span} | {len(worse[w])}/{len(ts)} |")
        ts_one = sorted(one_step[weightings[0]], key=int, reverse=True)
        self.p("", "One-step estimate x0_hat from x_t (Fig. 3), MSE(x0_hat, x0), mean over seeds:", "",
               "| weighting | " + " | ".join(f"t={t}" for t in ts_one) + " |", "|---" * (len(ts_one) + 1) + "|")
        for w in weightings:
            self.p(f"| {w} | " + " | ".join(f"{one_step[w][t]:.3f}" for t in ts_one) + " |")
        for w in weightings:
            run = next(r for r in exp["runs"] if r["weighting"] == w and r["status"] == "succeeded")
            data = self.source._get(f"/runs/{run['id']}/artifacts/one_step_estimation.png")
            p, link = self.fig(f"{self.study.name}_{section.id}_one_step_{w}.png")
            p.write_bytes(data)
            self.p("", f"{w} (run `{run['id']}`, seed {run['seed']}): columns x0, then (x_t, x0_hat) for t = "
                       f"{', '.join(ts_one)}", "", f"![one-step estimates, {w}]({link})")
        self.p("")
        base, meth = section.baseline, section.method
        top = ts_one[0]
        fewer = len(worse[meth]) < len(worse[base])
        better_top = one_step[meth][top] < one_step[base][top]
        if fewer and better_top:
            self.verdict(section, "reproduced", f"{meth} is worse than Initial at {len(worse[meth])} evaluated t against "
                                                f"{len(worse[base])} for {base}, and its one-step x0 error at t={top} is "
                                                f"{one_step[meth][top]:.2f} against {one_step[base][top]:.2f}.")
        elif not fewer and not better_top:
            self.verdict(section, "not reproduced", f"{meth} is worse than Initial at {len(worse[meth])} t against {len(worse[base])} "
                                                    f"for {base}; one-step x0 error at t={top}: {one_step[meth][top]:.2f} against {one_step[base][top]:.2f}.")
        else:
            self.verdict(section, "inconclusive", f"worse-than-Initial t: {len(worse[meth])} ({meth}) against {len(worse[base])} ({base}); "
                                                  f"one-step x0 error at t={top}: {one_step[meth][top]:.2f} against {one_step[base][top]:.2f}.")

    def _variants(self, section: Section, board: dict) -> None:
        metric = section.metric or board["rows"][0]["metric"]
        cells = grid(board, metric, excluded=self.excluded)
        keys = sorted(cells)
        base = section.baseline
        self.p(f"Goal: never worse than {base} at any (training steps, T) cell, better in at least one; "
               f"{caption(board, metric)}.", "", "| weighting | better | tie | worse | n/a | meets the goal |", "|---|---|---|---|---|---|")
        winners, complete = [], []
        for w in section.weightings:
            o = [compare(cells[k].get(w), cells[k].get(base)) for k in keys]
            ok = o.count("worse") == 0 and o.count("better") > 0 and o.count("n/a") == 0
            winners += [w] if ok else []
            complete += [w] if o.count("n/a") == 0 else []
            self.p(f"| {w} | {o.count('better')} | {o.count('tie')} | {o.count('worse')} | {o.count('n/a')} | {'yes' if ok else 'no'} |")
        self.p("")
        missing = [w for w in section.weightings if w not in complete]
        pending = f" ({', '.join(missing)}: cells with fewer than two seeds, no verdict)" if missing else ""
        if winners:
            self.verdict(section, "goal met", f"{', '.join(winners)} never lose to {base} in {len(keys)} cells and win some{pending}.")
        elif not complete:
            self.verdict(section, "inconclusive", f"no variant has two or more seeds in every cell yet{pending}.")
        else:
            self.verdict(section, "goal not met", f"{', '.join(complete)} each lose to {base} somewhere in {len(keys)} cells "
                                                  f"or win none{pending}.")
