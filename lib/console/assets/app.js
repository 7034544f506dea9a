/**
 * The operator console's client (served by lib/console/server.ts): Preact components written with
 * htm's tagged templates, uPlot for the charts — all three loaded from node_modules by the server,
 * no build step, no CDN.
 *
 * The operator token lives in sessionStorage (this tab only, gone when it closes) and travels only
 * as `Authorization: Bearer …` on same-origin requests; never in a cookie or a URL.
 */
import htm from '/console/vendor/htm.js';
import { Component, createRef, h, render } from '/console/vendor/preact.js';
import uPlot from '/console/vendor/uplot.js';

const html = htm.bind(h);

const TOKEN_KEY = 'itk3-operator-token';
const REFRESH_MS = 5000;
const STAGES = ['authenticate', 'authorise', 'decrypt', 'verify', 'deliver'];
const STAGE_COLOURS = ['#005eb8', '#7c2855', '#ed8b00', '#007f3b', '#330072'];
/** 20013 (delivered, acknowledged) is green; rejection codes take the other colours in order. */
const ACK_COLOUR = '#007f3b';
const REJECTION_COLOURS = ['#d5281b', '#ed8b00', '#7c2855', '#005eb8', '#330072', '#768692', '#00a499'];

class Unauthorised extends Error {}

/** A console API call with the operator token; 401 becomes {@link Unauthorised}. */
async function api(token, path, method = 'GET') {
  const response = await fetch(`/console/api${path}`, {
    method,
    headers: { authorization: `Bearer ${token}` },
    cache: 'no-store',
    credentials: 'omit',
  });
  if (response.status === 401) throw new Unauthorised('the operator token was refused');
  const body = await response.json();
  if (!response.ok) throw new Error(body.message ?? `HTTP ${response.status}`);
  return body;
}

const time = (iso) => iso.slice(11, 23);
const short = (id) => (id ? id.slice(0, 8) : '');

/**
 * The stage strip of a trace: passed, the deciding stage (coloured by the outcome), then either
 * `responded` (deliver signed the ITK3 response to a rejection) or not reached.
 */
function stageStates(trace, timeline) {
  const seen = timeline.map((e) => STAGES.indexOf(e.stage)).filter((i) => i >= 0);
  const decider = trace.stage ? STAGES.indexOf(trace.stage) : Math.max(-1, ...seen);
  return STAGES.map((stage, i) => {
    if (i < decider) return { stage, state: 'passed' };
    if (i === decider) return { stage, state: trace.status };
    return { stage, state: seen.includes(i) ? 'responded' : 'not-reached' };
  });
}

class TokenForm extends Component {
  submit = (event) => {
    event.preventDefault();
    const value = event.currentTarget.elements.token.value.trim();
    if (value) this.props.onToken(value);
  };

  render({ error }) {
    return html`
      <form class="token-form card" onSubmit=${this.submit}>
        <h2>Operator token</h2>
        <p>
          The token <code>itk3 serve --console</code> printed once, or the content of its
          <code>--operator-token-file</code>. It stays in this tab only.
        </p>
        <input id="token" name="token" type="password" autocomplete="off" spellcheck="false" required />
        <button type="submit">Open the console</button>
        ${error && html`<p class="error" role="alert">${error}</p>`}
      </form>
    `;
  }
}

/** A small uPlot chart of per-minute counts; data replaced in place on refresh. */
class MinuteChart extends Component {
  container = createRef();

  componentDidMount() {
    this.draw();
  }

  componentDidUpdate(previous) {
    const { counts } = this.props;
    const sameSeries = previous.seriesKeys.join() === this.props.seriesKeys.join();
    if (this.plot && sameSeries) this.plot.setData([counts.minutes, ...this.props.series]);
    else this.draw();
  }

  componentWillUnmount() {
    this.plot?.destroy();
  }

  draw() {
    this.plot?.destroy();
    const { counts, series, seriesKeys, colours, title } = this.props;
    const element = this.container.current;
    const width = Math.max(300, Math.min(620, element.clientWidth || 560));
    this.plot = new uPlot(
      {
        title,
        width,
        height: 200,
        cursor: { drag: { x: false, y: false } },
        scales: { y: { range: (_u, _min, max) => [0, Math.max(1, max)] } },
        axes: [{}, { size: 40, values: (_u, ticks) => ticks.map((t) => (Number.isInteger(t) ? t : '')) }],
        legend: { live: false },
        series: [
          { label: 'minute' },
          ...seriesKeys.map((key, i) => ({
            label: key,
            stroke: colours[i],
            width: 2,
            points: { show: true, size: 5 },
          })),
        ],
      },
      [counts.minutes, ...series],
      element,
    );
  }

  render() {
    return html`<div class="chart" ref=${this.container}></div>`;
  }
}

function Charts({ counts }) {
  if (!counts) return null;
  const codes = Object.keys(counts.itk3Codes).sort();
  return html`
    <section id="charts" class="card">
      <h2>Per minute, last ${counts.minutes.length} minutes</h2>
      <div class="charts">
        <${MinuteChart}
          title="Outcomes by deciding stage"
          counts=${counts}
          seriesKeys=${STAGES}
          series=${STAGES.map((s) => counts.stages[s])}
          colours=${STAGE_COLOURS}
        />
        <${MinuteChart}
          title="ITK3 codes"
          counts=${counts}
          seriesKeys=${codes}
          series=${codes.map((c) => counts.itk3Codes[c])}
          colours=${codes.map((code, i) =>
            code === '20013' ? ACK_COLOUR : REJECTION_COLOURS[i % REJECTION_COLOURS.length],
          )}
        />
      </div>
    </section>
  `;
}

function Outcome({ status }) {
  return html`<span class=${`badge ${status}`}>${status}</span>`;
}

function Traces({ traces, selected, onSelect }) {
  return html`
    <section id="traces" class="card">
      <h2>Recent traces <small>${traces.length}</small></h2>
      <table>
        <thead>
          <tr>
            <th>last activity</th><th>trace</th><th>sender → recipient</th><th>message id</th>
            <th>outcome</th><th>stage</th><th>ITK3</th><th>code</th>
          </tr>
        </thead>
        <tbody>
          ${traces.map(
            (t) => html`
              <tr key=${t.traceId} data-trace=${t.traceId} class=${t.traceId === selected ? 'selected' : ''}>
                <td>${time(t.lastAt)}</td>
                <td>
                  <button class="link" title=${t.traceId} onClick=${() => onSelect(t.traceId)}>
                    ${short(t.traceId)}
                  </button>
                </td>
                <td>${t.sender ?? '?'} → ${t.recipient ?? '?'}</td>
                <td title=${t.messageId ?? ''}>${short(t.messageId)}</td>
                <td><${Outcome} status=${t.status} /></td>
                <td>${t.stage ?? ''}</td>
                <td>${t.itk3Code ?? ''}</td>
                <td>${t.code ?? ''}</td>
              </tr>
            `,
          )}
        </tbody>
      </table>
    </section>
  `;
}

function Timeline({ detail }) {
  if (!detail) {
    return html`<section id="timeline" class="card"><h2>Timeline</h2><p class="hint">Pick a trace.</p></section>`;
  }
  const { trace, timeline } = detail;
  return html`
    <section id="timeline" class="card" data-trace=${trace.traceId}>
      <h2>Timeline <small title=${trace.traceId}>${trace.traceId}</small></h2>
      <ol class="stages">
        ${stageStates(trace, timeline).map(
          (s) => html`<li key=${s.stage} class=${`stage ${s.state}`} data-state=${s.state}>${s.stage}</li>`,
        )}
      </ol>
      <p>
        <${Outcome} status=${trace.status} />
        ${trace.stage ? ` at ${trace.stage}` : ''}${trace.itk3Code ? `, ITK3 ${trace.itk3Code}` : ''}
        ${trace.code ? html`, <code>${trace.code}</code>` : ''}
      </p>
      <table class="events">
        <thead>
          <tr><th>time</th><th>stage</th><th>event</th><th>code</th><th>ITK3</th><th>detail</th></tr>
        </thead>
        <tbody>
          ${timeline.map(
            (e, i) => html`
              <tr key=${i} class=${`event ${e.event}`}>
                <td>${time(e.at)}</td>
                <td>${e.stage}</td>
                <td>${e.event}</td>
                <td>${e.code ?? ''}</td>
                <td>${e.itk3Code ?? ''}</td>
                <td class="wrap">${[e.ruleId, e.detail].filter(Boolean).join(' · ')}</td>
              </tr>
            `,
          )}
        </tbody>
      </table>
    </section>
  `;
}

function DeadLetters({ letters, busy, onRedrive }) {
  return html`
    <section id="dead-letters" class="card">
      <h2>Dead letters <small>${letters.length}</small></h2>
      ${
        letters.length === 0
          ? html`<p class="hint">None.</p>`
          : html`
            <table>
              <thead>
                <tr><th>stage</th><th>message id</th><th>trace</th><th>reason</th><th>dead-lettered</th><th></th></tr>
              </thead>
              <tbody>
                ${letters.map(
                  (l) => html`
                    <tr key=${l.messageId} data-dead-letter=${l.messageId}>
                      <td>${l.stage}</td>
                      <td title=${l.messageId}>${short(l.messageId)}</td>
                      <td title=${l.traceId}>${short(l.traceId)}</td>
                      <td><code>${l.reason}</code></td>
                      <td>${time(l.deadLetteredAt)}</td>
                      <td>
                        <button class="redrive" disabled=${busy} onClick=${() => onRedrive(l)}>Redrive</button>
                      </td>
                    </tr>
                  `,
                )}
              </tbody>
            </table>
          `
      }
    </section>
  `;
}

class App extends Component {
  state = {
    token: sessionStorage.getItem(TOKEN_KEY),
    error: undefined,
    notice: undefined,
    traces: [],
    deadLetters: [],
    counts: undefined,
    selected: undefined,
    detail: undefined,
    busy: false,
  };

  componentDidMount() {
    if (this.state.token) this.refresh();
    this.timer = setInterval(() => {
      if (this.state.token && !this.state.busy) this.refresh();
    }, REFRESH_MS);
  }

  componentWillUnmount() {
    clearInterval(this.timer);
  }

  setToken = (token) => {
    sessionStorage.setItem(TOKEN_KEY, token);
    this.setState({ token, error: undefined }, () => this.refresh());
  };

  signOut = () => {
    sessionStorage.removeItem(TOKEN_KEY);
    this.setState({ token: null, traces: [], deadLetters: [], counts: undefined, detail: undefined });
  };

  async guarded(work) {
    try {
      await work(this.state.token);
    } catch (error) {
      if (error instanceof Unauthorised) {
        sessionStorage.removeItem(TOKEN_KEY);
        this.setState({ token: null, error: 'That token was refused.' });
      } else {
        this.setState({ error: error.message });
      }
    }
  }

  refresh = (focus) =>
    this.guarded(async (token) => {
      const [traces, letters, counts] = await Promise.all([
        api(token, '/traces'),
        api(token, '/dead-letters'),
        api(token, '/counts'),
      ]);
      const selected = focus ?? this.state.selected ?? traces.traces[0]?.traceId;
      const detail = selected ? await api(token, `/traces/${encodeURIComponent(selected)}`) : undefined;
      this.setState({
        traces: traces.traces,
        deadLetters: letters.deadLetters,
        counts,
        selected,
        detail,
        error: undefined,
      });
    });

  select = (traceId) => {
    this.setState({ selected: traceId });
    this.guarded(async (token) => {
      const detail = await api(token, `/traces/${encodeURIComponent(traceId)}`);
      this.setState({ detail });
    });
  };

  redrive = (letter) => {
    this.setState({ busy: true });
    this.guarded(async (token) => {
      const path = `/dead-letters/${letter.stage}/${encodeURIComponent(letter.messageId)}/redrive`;
      await api(token, path, 'POST');
      this.setState({ notice: `Redriven ${short(letter.messageId)} back to ${letter.stage}` });
      await this.refresh(letter.traceId);
    }).finally(() => this.setState({ busy: false }));
  };

  render(_props, s) {
    return html`
      <header>
        <h1>ITK3 operator console</h1>
        ${s.token && html`<button class="quiet" onClick=${this.signOut}>Sign out</button>`}
      </header>
      <main>
        ${
          s.token
            ? html`
              ${s.error && html`<p class="error" role="alert">${s.error}</p>`}
              ${s.notice && html`<p class="notice" role="status">${s.notice}</p>`}
              <${Charts} counts=${s.counts} />
              <div class="columns">
                <${Traces} traces=${s.traces} selected=${s.selected} onSelect=${this.select} />
                <${Timeline} detail=${s.detail} />
              </div>
              <${DeadLetters} letters=${s.deadLetters} busy=${s.busy} onRedrive=${this.redrive} />
            `
            : html`<${TokenForm} error=${s.error} onToken=${this.setToken} />`
        }
      </main>
    `;
  }
}

render(html`<${App} />`, document.getElementById('app'));
