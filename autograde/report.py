"""What the instructor reads after a batch: each student's score and reasons, and where the class lost points."""
import textwrap


def failures_by_exercise(results):
    """Per graded cell: points, and how many students got full, partial and zero marks on it."""
    rows = {}
    for summary in results.values():
        for g in summary["grades"]:
            row = rows.setdefault(g["cell"], {"exercise": g["cell"], "points": g["max_score"], "full": 0,
                                              "partial": 0, "zero": 0})
            got = g["auto_score"] or 0.0
            row["full" if got >= g["max_score"] else "zero" if got == 0 else "partial"] += 1
    return list(rows.values())


def plot_failures(rows, path):
    """A stacked bar per exercise: students with full, partial and zero marks."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(rows)), 4))
    names = [r["exercise"].removeprefix("test_") for r in rows]
    bottom = [0] * len(rows)
    for kind, colour in (("full", "tab:green"), ("partial", "tab:orange"), ("zero", "tab:red")):
        counts = [r[kind] for r in rows]
        ax.bar(names, counts, bottom=bottom, color=colour, label=kind)
        bottom = [b + c for b, c in zip(bottom, counts)]
    ax.set_ylabel("students")
    ax.set_title("Where the class lost points")
    ax.legend()
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def score(summary):
    """(points scored, points possible) of an outcome summary."""
    return (sum(g["auto_score"] or 0.0 for g in summary["grades"]), sum(g["max_score"] for g in summary["grades"]))


def report(results, problems, width=120):
    """Plain text: each student's score and every reason whole (wrapped under the reasons column), the intake
    problems, the failures by exercise."""
    name = max([len("student")] + [len(student) for student in results])
    indent = " " * (name + 15)
    lines = [f"{'student':{name}s}  {'score':11s}  reasons", "-" * width]
    for student, summary in sorted(results.items()):
        got, top = score(summary)
        text = [line for reason in summary["reasons"] for line in
                textwrap.wrap(reason, width - len(indent), subsequent_indent="  ")] or [""]
        lines.append(f"{student:{name}s}  {f'{got:g} / {top:g}':11s}  {text[0]}".rstrip())
        lines += [indent + line for line in text[1:]]
    if problems:
        lines += ["", "Submissions set aside or renamed:"]
        lines += [line for p in problems for line in
                  textwrap.wrap(str(getattr(p, "message", p)), width, initial_indent="  ", subsequent_indent="    ")]
    rows = failures_by_exercise(results)
    exercise = max([len("exercise")] + [len(r["exercise"]) for r in rows])
    lines += ["", f"{'exercise':{exercise}s}  points  full  partial  zero", "-" * (exercise + 30)]
    lines += [f"{r['exercise']:{exercise}s}  {r['points']:6g}{r['full']:6d}{r['partial']:9d}{r['zero']:6d}"
              for r in rows]
    return "\n".join(lines)
