"""The pages' Jinja templates (autoescaped) and the filters that format their figures.

Kept as Python strings so that they ship inside the package wherever it is installed. Links are
relative (``results``, ``campaign?name=…``): every page sits directly under the app's prefix, so
they work at ``/huitouke/`` and behind any sub-path Airflow is served under.
"""

from __future__ import annotations

import math
from typing import Any

from jinja2 import DictLoader, Environment, Undefined
from markupsafe import Markup

from huitouke.evaluate.verdicts import VERDICT_TABLE, by_code

REASON_ZH = {
    "opted_out": "已退订",
    "no_contact": "无联系方式",
    "cap_member_tier": "会员频次上限",
    "lower_priority": "让位高优先级",
    "cap_daily_global": "每日总量上限",
    "repurchased": "已复购",
    "completed": "波次完成",
}
STATUS_ZH = {"planned": "已计划", "queued": "已入队", "failed": "失败"}


def _finite(value: Any) -> bool:
    """A number to show: not missing (None, a figure a row does not have), not NaN or infinite."""
    if value is None or isinstance(value, Undefined):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def num(value: Any) -> str:
    return f"{int(round(float(value))):,}" if _finite(value) else "–"


def pct(value: Any, digits: int = 2) -> str:
    return f"{100 * float(value):.{digits}f}%" if _finite(value) else "–"


def pp(value: Any) -> str:
    return f"{100 * float(value):+.2f}" if _finite(value) else "–"


def points(value: Any) -> str:
    return f"{100 * float(value):.2f}" if _finite(value) else "–"


def pp_ci(low: Any, high: Any) -> str:
    return f"[{100 * float(low):+.2f}, {100 * float(high):+.2f}]" if _finite(low) and _finite(high) else ""


def cny(cents: Any, signed: bool = False) -> str:
    if not _finite(cents):
        return "–"
    return f"{float(cents) / 100:{'+' if signed else ''},.2f}"


def pvalue(value: Any) -> str:
    if not _finite(value):
        return "–"
    return "<0.001" if float(value) < 0.001 else f"{float(value):.3f}"


def ratio(value: Any) -> str:
    return f"{float(value):,.2f}" if _finite(value) else "–"


STYLE = """
:root { --fg:#1f2933; --muted:#667085; --line:#e4e7ec; --bg:#fff; --head:#f8fafc; --accent:#0b6bcb;
        --lift:#067647; --drop:#b42318; --none:#475467; --few:#b54708; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", "PingFang SC", "Microsoft YaHei",
       sans-serif; color:var(--fg); background:var(--bg); }
header { display:flex; gap:20px; align-items:baseline; padding:12px 20px; border-bottom:1px solid var(--line); }
header .brand { font-weight:700; font-size:16px; color:var(--fg); text-decoration:none; }
header nav a { margin-right:14px; color:var(--accent); text-decoration:none; }
header nav a.on { color:var(--fg); font-weight:600; border-bottom:2px solid var(--accent); }
header .store { margin-left:auto; color:var(--muted); font-size:12px; }
main { padding:16px 20px 40px; max-width:1600px; }
h1 { font-size:20px; margin:4px 0 12px; } h2 { font-size:16px; margin:28px 0 8px; }
h3 { font-size:14px; margin:18px 0 6px; }
p.note, .muted { color:var(--muted); } p.note { margin:6px 0 10px; max-width:1000px; }
a { color:var(--accent); }
form.filters { display:flex; flex-wrap:wrap; gap:12px; align-items:end; margin:8px 0 12px; }
form.filters label { display:flex; flex-direction:column; font-size:12px; color:var(--muted); }
select, input, button { font:inherit; padding:3px 6px; }
.table-wrap { overflow-x:auto; }
table { border-collapse:collapse; margin:4px 0 8px; font-size:13px; }
th, td { padding:4px 6px; border-bottom:1px solid var(--line); text-align:right; white-space:nowrap;
         vertical-align:top; }
th { background:var(--head); font-weight:600; font-size:12px; white-space:normal; min-width:3.5em; }
td small.ci, td small.span { display:block; color:var(--muted); font-size:11px; }
td.verdict-cell { text-align:left; white-space:normal; min-width:150px; max-width:220px; }
th small, td small { display:block; font-weight:400; color:var(--muted); font-size:11px; }
th.l, td.l { text-align:left; } tr.total td { font-weight:600; border-top:2px solid var(--line); }
td.reasons { text-align:left; white-space:normal; min-width:160px; font-size:12px; color:var(--muted); }
td.error { text-align:left; white-space:normal; max-width:420px; color:var(--drop); font-size:12px; }
.verdict { display:inline-block; padding:1px 7px; border-radius:10px; font-size:12px; color:#fff;
           background:var(--none); line-height:1.35; }
.verdict small { display:block; font-size:11px; color:#fff; opacity:.9; }
.verdict.lift, .verdict.likely_lift { background:var(--lift); }
.verdict.drop, .verdict.likely_drop { background:var(--drop); }
.verdict.likely_lift, .verdict.likely_drop { opacity:.8; }
.verdict.too_few, .verdict.empty_arm, .verdict.borderline { background:var(--few); }
dl.verdicts { display:grid; grid-template-columns:max-content 1fr; gap:4px 12px; max-width:1000px;
              font-size:13px; margin:6px 0 10px; }
dl.verdicts dt { margin:0; } dl.verdicts dd { margin:0; color:var(--muted); }
.status { font-size:12px; padding:1px 6px; border-radius:4px; background:var(--head);
          border:1px solid var(--line); }
.status.failed { color:var(--drop); border-color:var(--drop); }
.status.queued { color:var(--lift); border-color:var(--lift); }
.message { border:1px solid var(--line); border-left:4px solid var(--accent); background:var(--head);
           padding:12px 16px; margin:16px 0; max-width:900px; }
.message.problem { border-left-color:var(--drop); }
.message code, code { background:#eef2f6; padding:1px 5px; border-radius:3px; }
.chart { width:100%; max-width:760px; height:auto; display:block; }
.chart .grid { stroke:var(--line); } .chart .zero { stroke:#98a2b3; stroke-width:1.2; }
.chart .axis, .chart .legend text { font-size:11px; fill:var(--muted); }
.chart .line { fill:none; stroke-width:2.2; } .chart .treated { stroke:var(--accent); }
.chart .holdout { stroke:#98a2b3; stroke-dasharray:6 4; }
.chart .dot { fill:var(--none); } .chart .whisker { stroke:var(--none); stroke-width:1.5; }
.chart .dot.lift { fill:var(--lift); } .chart .whisker.lift { stroke:var(--lift); }
.chart .dot.drop { fill:var(--drop); } .chart .whisker.drop { stroke:var(--drop); }
.chart .dot.too_few, .chart .dot.borderline { fill:var(--few); }
.chart .whisker.too_few, .chart .whisker.borderline { stroke:var(--few); opacity:.6; }
.chart .dot.likely_lift { fill:var(--lift); } .chart .whisker.likely_lift { stroke:var(--lift); opacity:.6; }
.chart .dot.likely_drop { fill:var(--drop); } .chart .whisker.likely_drop { stroke:var(--drop); opacity:.6; }
.cols { display:flex; flex-wrap:wrap; gap:32px; }
details summary { cursor:pointer; color:var(--accent); margin:6px 0; }
.pager a { margin-right:12px; }
"""

BASE = """<!doctype html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{{ title }} · 回头客 huitouke</title>
<style>{{ style }}</style>
</head>
<body>
<header>
  <a class="brand" href="./">回头客 huitouke</a>
  <nav>
    <a href="./" class="{{ 'on' if page == 'plans' else '' }}">Campaign plans 活动计划</a>
    <a href="results" class="{{ 'on' if page in ('results', 'campaign') else '' }}">Results 活动效果</a>
  </nav>
  <span class="store">CRM store 数据源: Connection <code>{{ conn_id }}</code></span>
</header>
<main>
{% block main %}{% endblock %}
</main>
</body>
</html>
"""

MACROS = """
{% macro verdict(code) -%}
{%- set v = verdict_of(code) -%}
<span class="verdict {{ v.code }}" title="{{ v.explanation }}">{{ v.label }}<small>{{ v.label_zh }}</small></span>
{%- endmacro %}

{% macro verdict_legend() -%}
<details class="legend"><summary>What the verdicts mean 结论说明</summary>
<p class="note">Each verdict reads where the lift's 95% interval lies, whether p &lt; 0.05, and whether the
test was <em>powered</em>: at least 100 customers in the smaller arm and a minimum detectable effect (MDE)
of at most 5 points. The same words as <code>huitouke evaluate</code> and the task log (docs/evaluation.md).</p>
<dl class="verdicts">
{% for v in verdict_table %}<dt>{{ verdict(v.code) }}</dt><dd><em>{{ v.when }}</em>: {{ v.explanation }}</dd>
{% endfor %}</dl>
</details>
{%- endmacro %}

{% macro th(en, zh, cls='') -%}
<th class="{{ cls }}">{{ en }}<small>{{ zh }}</small></th>
{%- endmacro %}

{% macro reasons(counts) -%}
{% for reason, count in counts.items() %}{{ reason_zh.get(reason, reason) }} {{ reason }} {{ count | num }}{% if not loop.last %} · {% endif %}{% endfor %}
{%- endmacro %}

{% macro comparison_heads() -%}
{{ th('treated', '实验组') }}{{ th('holdout', '对照组') }}
{{ th('responders', '响应 实验/对照') }}
{{ th('response', '响应率') }}{{ th('natural', '自然复购率') }}
{{ th('lift pp [95% CI]', '提升（百分点）') }}{{ th('p', 'p值') }}{{ th('MDE pp', '最小可检测') }}
{{ th('verdict', '结论', 'l') }}
{{ th('incr. revenue', '增量收入') }}{{ th('cost', '成本') }}
{{ th('ROI incr.', '增量ROI') }}{{ th('ROI naive', '表观ROI') }}
{%- endmacro %}

{% macro comparison_cells(r) -%}
<td>{{ r.customers | num }}</td><td>{{ r.control_customers | num }}</td>
<td>{{ r.responders | num }} / {{ r.control_responders | num }}</td>
<td>{{ r.response_rate | pct }}</td><td>{{ r.control_rate | pct }}</td>
<td>{{ r.lift | pp }} <small class="ci">{{ pp_ci(r.lift_low, r.lift_high) }}</small></td>
<td>{{ r.p_value | pvalue }}</td><td>{{ r.mde | points }}</td>
<td class="verdict-cell">{{ verdict(r.verdict) }}</td>
<td>{{ cny(r.incremental_revenue_cents, true) }}</td><td>{{ r.cost_cents | cny }}</td>
<td>{{ r.incremental_roi | ratio }}</td><td>{{ r.naive_roi | ratio }}</td>
{%- endmacro %}
"""

MESSAGE = """{% extends "base.html" %}
{% block main %}
<h1>{{ title }}</h1>
<div class="message{{ ' problem' if problem else '' }}">
  <p>{{ message }}</p>
  {% if command %}<p>Run 请运行: <code>{{ command }}</code></p>{% endif %}
  {% for line in lines %}<p class="muted">{{ line }}</p>{% endfor %}
</div>
{% endblock %}
"""

PLANS = """{% extends "base.html" %}
{% from "macros.html" import th, reasons with context %}
{% block main %}
<h1>Campaign plans 每日活动计划 · {{ day }}</h1>
<form class="filters" method="get" action="./">
  <label>business day 营业日
    <select name="day" onchange="this.form.submit()">
      {% for d in days %}<option value="{{ d }}" {{ 'selected' if d == day else '' }}>{{ d }}</option>{% endfor %}
    </select>
  </label>
  <noscript><button type="submit">show 查看</button></noscript>
  <span class="pager">
    {% if older %}<a href="?day={{ older }}">← {{ older }}</a>{% endif %}
    {% if newer %}<a href="?day={{ newer }}">{{ newer }} →</a>{% endif %}
  </span>
</form>
{% if notice %}<div class="message">{{ notice }}</div>{% endif %}
<p class="note">What the <code>plan_campaigns</code> task decided for this business day, per campaign
(highest priority first): who entered, which waves fell due and what became of them — treated, held out
(the holdout receives nothing and measures the natural repurchase) or suppressed (decided blind to the
arm) — who exited, and the messages planned and queued by <code>render_messages</code>.
每个活动当天的进入、到期波次、触达/对照/抑制、退出和消息数量。</p>
<div class="table-wrap"><table>
<thead><tr>
  {{ th('campaign', '活动', 'l') }}{{ th('priority', '优先级') }}
  {{ th('entered', '新进入') }}{{ th('of which holdout', '其中对照组') }}{{ th('deferred', '延后') }}
  {{ th('due', '到期波次') }}{{ th('treated', '触达') }}{{ th('held out', '对照留出') }}
  {{ th('suppressed', '抑制') }}{{ th('suppression reasons', '抑制原因', 'l') }}
  {{ th('exited', '退出') }}{{ th('exit reasons', '退出原因', 'l') }}
  {{ th('messages planned', '计划消息') }}{{ th('queued', '已入队') }}
  {{ th('status', '状态', 'l') }}{{ th('error', '错误', 'l') }}
</tr></thead>
<tbody>
{% for r in rows %}
<tr>
  <td class="l"><a href="campaign?name={{ r.campaign | urlencode }}">{{ r.campaign }}</a>
    <small>{{ r.kind }}</small></td>
  <td>{{ r.priority }}</td>
  <td>{{ r.entered | num }}</td><td>{{ r.entered_holdout | num }}</td><td>{{ r.deferred | num }}</td>
  <td>{{ r.due | num }}</td><td>{{ r.treated | num }}</td><td>{{ r.held_out | num }}</td>
  <td>{{ r.suppressed | num }}</td><td class="reasons">{{ reasons(r.suppressed_by) }}</td>
  <td>{{ r.exited | num }}</td><td class="reasons">{{ reasons(r.exited_by) }}</td>
  <td>{{ r.messages_planned | num }}</td><td>{{ r.messages_queued | num }}</td>
  <td class="l"><span class="status {{ r.status }}">{{ status_zh.get(r.status, r.status) }} {{ r.status }}</span></td>
  <td class="error">{{ r.error or '' }}</td>
</tr>
{% endfor %}
</tbody>
<tfoot>
<tr class="total">
  <td class="l">all campaigns 合计</td><td></td>
  <td>{{ totals.entered | num }}</td><td>{{ totals.entered_holdout | num }}</td><td>{{ totals.deferred | num }}</td>
  <td>{{ totals.due | num }}</td><td>{{ totals.treated | num }}</td><td>{{ totals.held_out | num }}</td>
  <td>{{ totals.suppressed | num }}</td><td class="reasons">{{ reasons(totals.suppressed_by) }}</td>
  <td>{{ totals.exited | num }}</td><td class="reasons">{{ reasons(totals.exited_by) }}</td>
  <td>{{ totals.messages_planned | num }}</td><td>{{ totals.messages_queued | num }}</td><td></td><td></td>
</tr>
</tfoot>
</table></div>
<p class="note">Status: <em>planned</em> — messages not rendered yet; <em>queued</em> — rendered into the
outbox; <em>failed</em> — the campaign's template is broken (error column), nothing of it was queued.</p>
{% endblock %}
"""

RESULTS = """{% extends "base.html" %}
{% from "macros.html" import th, verdict, verdict_legend, comparison_heads, comparison_cells with context %}
{% block main %}
<h1>Campaign results 活动效果</h1>
<p class="note">Every message is measured against a <strong>holdout</strong>: customers who entered the
campaign exactly like the others but were sent nothing. <em>Response</em> is the share of treated
customers who bought within the window after sending, <em>natural</em> the holdout's share; the lift is
the difference, in percentage points, with its 95% interval. Intention to treat (ITT) counts every
customer of a wave, suppressed ones included. 每个活动都保留对照组（不发送），提升 = 响应率 − 自然复购率。</p>

<h2>All waves pooled, primary window, ITT 汇总（主窗口，意向处理口径）</h2>
{% if pooled %}
<div class="table-wrap"><table>
<thead><tr>{{ th('campaign', '活动', 'l') }}{{ th('waves', '波次数') }}{{ th('window', '窗口') }}
{{ th('sent for', '波次日期') }}{{ comparison_heads() }}</tr></thead>
<tbody>
{% for p in pooled %}
<tr>
  <td class="l"><a href="campaign?name={{ p.campaign | urlencode }}">{{ p.campaign }}</a></td>
  <td>{{ p.waves | num }}</td><td>{{ p.window_days }} d</td>
  <td>{{ p.first_due_on }}<small class="span">… {{ p.last_due_on }}</small></td>
  {{ comparison_cells(p) }}
</tr>
{% endfor %}
</tbody></table></div>
<p class="note">Pooled: customers and responders of each arm summed over the campaign's waves (a customer
counts once per wave), compared once; revenue and cost summed.</p>
{% else %}
<div class="message">No primary-window evaluation yet{{ ' for ' ~ campaign if campaign else '' }}.</div>
{% endif %}
{% for a in not_pooled %}
<div class="message not-pooled" id="not-pooled-{{ a.campaign }}"><a href="campaign?name={{ a.campaign | urlencode }}">{{ a.campaign }}</a>
is not in this table: none of its {{ a.waves | num }} evaluated wave(s) has reached
{% if a.primary_window %}its {{ a.primary_window }}-day primary window{% else %}its primary window{% endif %} yet
(evaluated so far at {% for w in a.windows %}{{ w }} d{{ ', ' if not loop.last else '' }}{% endfor %}: see its page).
尚无波次达到主评估窗口，暂不计入汇总。</div>
{% endfor %}
{{ verdict_legend() }}

<h2>Per wave 各波次</h2>
<form class="filters" method="get" action="results">
  <label>campaign 活动
    <select name="campaign">
      <option value="">all 全部</option>
      {% for c in campaigns %}<option value="{{ c }}" {{ 'selected' if c == campaign else '' }}>{{ c }}</option>{% endfor %}
    </select></label>
  <label>window 窗口
    <select name="window">
      <option value="primary" {{ 'selected' if window == 'primary' else '' }}>primary 主窗口</option>
      {% for w in windows %}<option value="{{ w }}" {{ 'selected' if window == w | string else '' }}>{{ w }} days</option>{% endfor %}
      <option value="all" {{ 'selected' if window == 'all' else '' }}>all 全部</option>
    </select></label>
  <label>view 口径
    <select name="view">
      <option value="itt" {{ 'selected' if view == 'itt' else '' }}>ITT 意向处理</option>
      <option value="sent" {{ 'selected' if view == 'sent' else '' }}>sent only 仅已发送</option>
      <option value="received" {{ 'selected' if view == 'received' else '' }}>delivered only 仅已送达</option>
      <option value="all" {{ 'selected' if view == 'all' else '' }}>all 全部</option>
    </select></label>
  <button type="submit">show 查看</button>
</form>
{% if rows %}
<div class="table-wrap"><table>
<thead><tr>{{ th('campaign', '活动', 'l') }}{{ th('wave', '波次') }}{{ th('due', '波次日期') }}
{{ th('window', '窗口') }}{{ th('view', '口径') }}{{ comparison_heads() }}{{ th('evaluated', '评估日') }}</tr></thead>
<tbody>
{% for r in rows %}
<tr>
  <td class="l"><a href="campaign?name={{ r.campaign | urlencode }}">{{ r.campaign }}</a></td>
  <td><a href="campaign?name={{ r.campaign | urlencode }}&amp;wave={{ r.wave }}&amp;due={{ r.due_on }}">{{ r.wave }}</a></td>
  <td>{{ r.due_on }}</td><td>{{ r.window_days }} d{{ '*' if r.primary else '' }}</td><td>{{ r.view }}</td>
  {{ comparison_cells(r) }}
  <td>{{ r.evaluated_on }}</td>
</tr>
{% endfor %}
</tbody></table></div>
{% if truncated %}<p class="note">The latest {{ rows | length | num }} rows are shown: choose a campaign to see its older waves.</p>{% endif %}
<p class="note">* the campaign's primary window. A wave planned on its due day is sent the next morning;
a window of w days is evaluated once, on the first day it has fully matured.</p>
{% else %}
<div class="message">No evaluation matches these filters.</div>
{% endif %}
{% endblock %}
"""

CAMPAIGN = """{% extends "base.html" %}
{% from "macros.html" import th, verdict, verdict_legend, comparison_heads, comparison_cells with context %}
{% block main %}
<h1>{{ d.campaign }}{% if d.selected %} · wave {{ d.wave }} sent for {{ d.due_on }}{% endif %}</h1>
<p class="note"><a href="results?campaign={{ d.campaign | urlencode }}">all rows of this campaign 全部评估行</a>
{% if d.selected %} · <a href="campaign?name={{ d.campaign | urlencode }}">all waves pooled 全部波次汇总</a>{% endif %}</p>
{% if not d.has_any %}
<div class="message">No evaluation for {{ d.campaign }} yet: its first wave's shortest window has not
matured. 该活动尚无已成熟的评估窗口。</div>
{% else %}

{% if d.selected %}
<h2>This wave, every window and view 本波次各窗口</h2>
<div class="table-wrap"><table>
<thead><tr>{{ th('window', '窗口') }}{{ th('view', '口径') }}{{ comparison_heads() }}{{ th('evaluated', '评估日') }}</tr></thead>
<tbody>{% for r in d.wave_rows | sort(attribute='window_days') %}
<tr><td>{{ r.window_days }} d{{ '*' if r.primary else '' }}</td><td>{{ r.view }}</td>{{ comparison_cells(r) }}<td>{{ r.evaluated_on }}</td></tr>
{% else %}<tr><td class="l" colspan="16">No evaluated window for this wave.</td></tr>{% endfor %}</tbody>
</table></div>
{% else %}
<h2>All {{ d.waves | num }} evaluated waves pooled, per window (ITT) 各窗口汇总</h2>
<div class="table-wrap"><table>
<thead><tr>{{ th('window', '窗口') }}{{ th('waves', '波次数') }}{{ comparison_heads() }}</tr></thead>
<tbody>{% for p in d.by_window %}
<tr><td>{{ p.key }} d{{ '*' if p.key == d.primary_window else '' }}</td><td>{{ p.waves | num }}</td>{{ comparison_cells(p) }}</tr>
{% endfor %}</tbody>
</table></div>
{% endif %}

<h2>Waves over time, {{ d.campaign_window }}-day window (ITT) 各波次提升趋势</h2>
{% if d.campaign_window != d.primary_window %}
<div class="message not-primary">None of the {{ d.waves | num }} evaluated wave(s) has reached
{% if d.primary_window %}the {{ d.primary_window }}-day primary window{% else %}the primary window{% endif %} yet:
this page shows the longest window evaluated so far, {{ d.campaign_window }} days. 尚无波次达到主评估窗口。</div>
{% endif %}
{{ lift_chart }}
<details {{ 'open' if d.waves_over_time | length <= 12 else '' }}>
<summary>{{ d.waves_over_time | length }} of {{ d.waves | num }} evaluated waves at {{ d.campaign_window }} days 波次明细</summary>
<div class="table-wrap"><table>
<thead><tr>{{ th('wave', '波次') }}{{ th('due', '波次日期') }}{{ th('window', '窗口') }}{{ comparison_heads() }}</tr></thead>
<tbody>{% for r in d.waves_over_time | reverse %}
<tr><td><a href="campaign?name={{ d.campaign | urlencode }}&amp;wave={{ r.wave }}&amp;due={{ r.due_on }}">{{ r.wave }}</a></td>
<td>{{ r.due_on }}</td><td>{{ r.window_days }} d</td>{{ comparison_cells(r) }}</tr>
{% endfor %}</tbody>
</table></div>
</details>

<h2>Repurchase curve 复购曲线</h2>
{% if d.curve %}
<p class="note">Cumulative share of customers who bought again, by day since sending: treated against the
holdout's natural repurchase.
{% if d.selected %}This wave.{% else %}{{ d.curve_waves | length }} wave(s) matured to day {{ d.curve[-1].day }},
summed per day so that every point has the same customers
({{ d.curve_waves[0][1] }} … {{ d.curve_waves[-1][1] }}).{% endif %}
A lift that appears early and fades moved purchases earlier; one that keeps growing brought customers back.</p>
{{ curve_chart }}
<details><summary>curve figures 曲线数据</summary>
<div class="table-wrap"><table>
<thead><tr>{{ th('day', '天') }}{{ th('treated', '实验组客户') }}{{ th('responders', '响应') }}{{ th('response', '响应率') }}
{{ th('holdout', '对照组客户') }}{{ th('responders', '响应') }}{{ th('natural', '自然复购率') }}{{ th('lift pp', '提升') }}</tr></thead>
<tbody>{% for p in d.curve %}
<tr><td>{{ p.day }}</td><td>{{ p.customers | num }}</td><td>{{ p.responders | num }}</td><td>{{ p.response_rate | pct }}</td>
<td>{{ p.control_customers | num }}</td><td>{{ p.control_responders | num }}</td><td>{{ p.control_rate | pct }}</td><td>{{ p.lift | pp }}</td></tr>
{% endfor %}</tbody></table></div>
</details>
{% else %}
<div class="message">No repurchase curve stored yet.</div>
{% endif %}

<h2>Breakdowns, {{ d.window_shown }}-day window (ITT) 细分</h2>
{% if d.breakdowns %}
<p class="note">The comparison per segment on the wave's day, per channel decided and per variant.
{% if not d.selected %}Summed over the waves evaluated at the {{ d.window_shown }}-day window. {% endif %}
Many cells are many looks: a lift or drop is claimed only when the p-value adjusted for the number of
values (Bonferroni, <em>p adj.</em>) is below 0.05.</p>
{% for dimension, rows in d.breakdowns %}
<h3>{{ dimension }}</h3>
<div class="table-wrap"><table>
<thead><tr>{{ th('value', '取值', 'l') }}{{ th('treated', '实验组客户') }}{{ th('holdout', '对照组客户') }}
{{ th('responders', '响应 实验/对照') }}{{ th('response', '响应率') }}{{ th('natural', '自然复购率') }}
{{ th('lift pp [95% CI]', '提升及95%区间') }}{{ th('p adj.', '校正p值') }}{{ th('verdict', '结论', 'l') }}</tr></thead>
<tbody>{% for r in rows %}
<tr><td class="l">{{ r.value }}</td><td>{{ r.customers | num }}</td><td>{{ r.control_customers | num }}</td>
<td>{{ r.responders | num }} / {{ r.control_responders | num }}</td>
<td>{{ r.response_rate | pct }}</td><td>{{ r.control_rate | pct }}</td>
<td>{{ r.lift | pp }} {{ pp_ci(r.lift_low, r.lift_high) }}</td><td>{{ r.p_value_adjusted | pvalue }}</td>
<td class="verdict-cell">{{ verdict(r.verdict) }}</td></tr>
{% endfor %}</tbody></table></div>
{% endfor %}
{% else %}
<div class="message">No breakdowns stored yet.</div>
{% endif %}

<h2>What they bought, {{ d.window_shown }}-day window 购买品类</h2>
{% if d.categories %}
<p class="note">Categories of the treated responders' orders against the holdout's natural repurchases
(an order with two categories counts in both){% if not d.selected %}, from each wave's top five{% endif %}.</p>
<div class="cols">
{% for arm, rows in d.categories.items() %}
<div><h3>{{ 'treated 实验组' if arm == 'treatment' else 'holdout 对照组' if arm == 'holdout' else arm }}</h3>
<table><thead><tr>{{ th('category', '品类', 'l') }}{{ th('orders', '订单') }}{{ th('customers', '客户') }}{{ th('share', '占比') }}</tr></thead>
<tbody>{% for r in rows %}<tr><td class="l">{{ r.category }}</td><td>{{ r.orders | num }}</td><td>{{ r.customers | num }}</td><td>{{ r.share | pct(1) }}</td></tr>{% endfor %}</tbody>
</table></div>
{% endfor %}
</div>
{% else %}
<div class="message">No category figures stored yet.</div>
{% endif %}

{% if d.sequences %}
<h2>Over the wave sequence (ITT), as of {{ d.sequences[0].evaluated_on }} 多波次累计</h2>
<p class="note">Every customer who had a first wave, pooled over entry days whose wave k has matured:
a response is a paid order from the first wave's sending to wave k's sending plus the window.</p>
<div class="table-wrap"><table>
<thead><tr>{{ th('through wave', '截至波次') }}{{ th('window', '窗口') }}{{ th('entry days', '进入天数') }}{{ comparison_heads() }}</tr></thead>
<tbody>{% for r in d.sequences %}
<tr><td>{{ r.through_wave }}</td><td>{{ r.window_days }} d</td><td>{{ r.entry_days | default('–') }}</td>{{ comparison_cells(r) }}</tr>
{% endfor %}</tbody></table></div>
{% endif %}
{{ verdict_legend() }}
{% endif %}
{% endblock %}
"""

TEMPLATES = {
    "base.html": BASE,
    "macros.html": MACROS,
    "message.html": MESSAGE,
    "plans.html": PLANS,
    "results.html": RESULTS,
    "campaign.html": CAMPAIGN,
}


def environment() -> Environment:
    env = Environment(loader=DictLoader(TEMPLATES), autoescape=True)
    env.filters.update(num=num, pct=pct, pp=pp, points=points, cny=cny, pvalue=pvalue, ratio=ratio)
    env.globals.update(
        pp_ci=pp_ci,
        cny=cny,
        style=Markup(STYLE),  # our own constant CSS, not data
        verdict_of=by_code,
        verdict_table=VERDICT_TABLE,
        reason_zh=REASON_ZH,
        status_zh=STATUS_ZH,
    )
    return env
