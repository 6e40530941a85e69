// The API reference: /openapi.json, as a page a person can read (offline too: nothing
// here comes from another origin). Every operation with its parameters, request body
// fields and responses, then every schema the document defines.
//
// Built with DOM calls and textContent only (no innerHTML, no inline style), so it runs
// under the page's Content-Security-Policy.

const METHODS = ['get', 'post', 'put', 'patch', 'delete', 'head', 'options'];
// Jobcast's schemes in words (`key` operations list bearer, `read` ones bearer and token).
const AUTH = {
  bearer: 'an API key (`Authorization: Bearer <key>`)',
  token: 'a read token (`Authorization: Bearer <token>`, or `?token=<token>`)',
};

const $ = (id) => document.getElementById(id);
let doc;

try {
  const response = await fetch('/openapi.json', { cache: 'no-store' });
  if (!response.ok) throw new Error(`the server answered ${response.status}`);
  doc = await response.json();
  render();
} catch (error) {
  const status = $('ref-status');
  status.classList.add('is-error');
  status.textContent = `Could not read /openapi.json: ${error.message}`;
}
$('reference').removeAttribute('aria-busy');

function render() {
  const operations = [];
  for (const [path, item] of Object.entries(doc.paths ?? {})) {
    for (const method of METHODS) {
      if (item[method]) operations.push({ path, method, op: item[method], shared: item.parameters ?? [] });
    }
  }
  const main = $('reference');
  main.replaceChildren(
    intro(operations.length),
    contents(operations),
    ...operations.map(operation),
    schemas(),
  );
  $('ref-version').textContent = `${doc.info?.title ?? 'API'} ${doc.info?.version ?? ''} · OpenAPI ${doc.openapi ?? ''}`;
  document.title = `${doc.info?.title ?? 'API'} · API reference`;
  // The content arrived after the browser looked for the #fragment: look again.
  if (location.hash) document.getElementById(decodeURIComponent(location.hash.slice(1)))?.scrollIntoView();
}

function intro(count) {
  const section = h('section', 'panel ref-intro');
  section.append(
    h('h2', 'panel-title', `${doc.info?.title ?? 'API'} ${doc.info?.version ?? ''}`.trim()),
    ...(doc.info?.description ? [prose('p', doc.info.description)] : []),
    prose(
      'p',
      `${count} operations. Bodies are JSON; every error is \`application/problem+json\` ` +
        '(`type`, `title`, `status`, `detail`). Each operation names the credential it takes once the ' +
        'server has an API key (`JOBS_API_KEY`); without one, on loopback, everything is open.',
    ),
    prose(
      'p',
      'Not an HTTP operation, so not listed here: the WebSocket `/api/jobs/ws` (JSON frames ' +
        '`subscribe`, `unsubscribe`, `ping`; described in the manual, `docs/live-updates.md`).',
    ),
  );
  const schemes = doc.components?.securitySchemes ?? {};
  if (Object.keys(schemes).length) {
    const list = h('ul', 'ref-list');
    for (const [name, scheme] of Object.entries(schemes)) {
      const item = h('li');
      item.append(h('code', 'ref-name', name), ' ', prose('span', scheme.description ?? schemeText(scheme)));
      list.append(item);
    }
    section.append(h('h3', 'ref-h', 'Credentials'), list);
  }
  return section;
}

function contents(operations) {
  const nav = h('nav', 'panel ref-toc');
  nav.setAttribute('aria-labelledby', 'ref-toc-title');
  const list = h('ol', 'ref-toc-list');
  for (const { path, method, op } of operations) {
    const item = h('li');
    const link = h('a', 'ref-toc-link');
    link.href = `#${anchor(method, path, op)}`;
    link.append(methodTag(method), h('code', 'ref-path', path), h('span', 'ref-toc-summary', op.summary ?? ''));
    item.append(link);
    list.append(item);
  }
  const schemaList = h('p', 'ref-toc-schemas');
  schemaList.append('Schemas: ');
  Object.keys(doc.components?.schemas ?? {}).forEach((name, index) => {
    if (index) schemaList.append(', ');
    schemaList.append(schemaLink(name));
  });
  nav.append(h('h2', 'panel-title', 'Operations'), list, schemaList);
  nav.firstChild.id = 'ref-toc-title';
  return nav;
}

function operation({ path, method, op, shared }) {
  const section = h('section', 'panel ref-op');
  section.id = anchor(method, path, op);
  section.dataset.method = method.toUpperCase();
  section.dataset.path = path;
  const title = h('h2', 'ref-op-title');
  title.append(methodTag(method), h('code', 'ref-path', path));
  section.append(title, h('p', 'ref-summary', op.summary ?? ''));
  if (op.description) section.append(prose('p', op.description, 'ref-description'));
  section.append(auth(op.security ?? doc.security));

  const parameters = [...shared, ...(op.parameters ?? [])].map(resolve);
  if (parameters.length) {
    section.append(h('h3', 'ref-h', 'Parameters'));
    section.append(
      fields(
        parameters.map((p) => ({
          name: p.name,
          where: p.in,
          schema: p.schema ?? {},
          required: p.required,
          description: p.description,
        })),
        'ref-params',
      ),
    );
  }

  if (op.requestBody) {
    const body = resolve(op.requestBody);
    const [media, content] = Object.entries(body.content ?? {})[0] ?? [];
    const head = h('h3', 'ref-h', 'Request body');
    head.append(' ', h('span', 'ref-meta', `${media ?? ''}${body.required ? '' : ', optional'}`));
    section.append(head);
    if (body.description) section.append(prose('p', body.description));
    if (content?.schema) section.append(schemaBlock(content.schema, 'ref-body'));
  }

  section.append(h('h3', 'ref-h', 'Responses'), responses(op.responses ?? {}));
  return section;
}

function auth(security) {
  const line = h('p', 'ref-auth');
  const names = [...new Set((security ?? []).flatMap((requirement) => Object.keys(requirement)))];
  line.append(h('span', 'ref-label', 'Credential'), ' ');
  const text = names.length ? `${names.map((name) => AUTH[name] ?? name).join(', or ')}.` : 'none: open to anyone.';
  line.append(prose('span', text[0].toUpperCase() + text.slice(1)));
  return line;
}

function responses(map) {
  const list = h('ul', 'ref-responses');
  for (const [status, raw] of Object.entries(map)) {
    const response = resolve(raw);
    const item = h('li', 'ref-response');
    item.dataset.status = status;
    const head = h('div', 'ref-response-head');
    const code = h('span', `ref-status-code is-${status[0]}xx`, status);
    head.append(code, prose('span', response.description ?? '', 'ref-response-text'));
    item.append(head);
    for (const [media, content] of Object.entries(response.content ?? {})) {
      const line = h('p', 'ref-response-media');
      line.append(h('span', 'ref-meta', media));
      if (content.schema) line.append(' ', typeNode(content.schema));
      item.append(line);
      const target = content.schema?.$ref ? resolve(content.schema) : content.schema;
      // Successful answers show their fields in place; the rest link to the schema.
      if (status.startsWith('2') && target?.properties) {
        const more = h('details', 'ref-details');
        more.append(h('summary', '', 'Fields'), schemaBlock(content.schema));
        item.append(more);
      }
    }
    list.append(item);
  }
  return list;
}

function schemas() {
  const section = h('section', 'ref-schemas');
  section.setAttribute('aria-labelledby', 'ref-schemas-title');
  const title = h('h2', 'ref-section-title', 'Schemas');
  title.id = 'ref-schemas-title';
  section.append(title);
  for (const [name, schema] of Object.entries(doc.components?.schemas ?? {})) {
    const card = h('section', 'panel ref-schema');
    card.id = `schema-${name}`;
    card.dataset.schema = name;
    card.append(h('h3', 'ref-schema-title', name));
    if (schema.description) card.append(prose('p', schema.description, 'ref-description'));
    card.append(schemaBlock({ $ref: `#/components/schemas/${name}` }));
    section.append(card);
  }
  return section;
}

/** The fields of an object schema, or one line naming the type of anything else. */
function schemaBlock(schema, className = '') {
  const target = resolve(schema);
  if (!target.properties) {
    const line = h('p', `ref-type-line ${className}`.trim());
    line.append(h('span', 'ref-label', 'Type'), ' ', typeNode(schema), ...constraintNodes(target));
    return line;
  }
  const required = new Set(target.required ?? []);
  const list = fields(
    Object.entries(target.properties).map(([name, property]) => ({
      name,
      schema: property,
      required: required.has(name),
      description: property.description ?? branches(property).find((b) => b.description)?.description,
    })),
    className,
  );
  if (target.additionalProperties === false) {
    const note = h('li', 'ref-field ref-closed', 'No other fields are accepted.');
    list.append(note);
  }
  return list;
}

function fields(entries, className) {
  const list = h('ul', `ref-fields ${className}`.trim());
  for (const { name, where, schema, required, description } of entries) {
    const item = h('li', 'ref-field');
    item.dataset.field = name;
    const head = h('div', 'ref-field-head');
    head.append(h('code', 'ref-name', name));
    if (where) head.append(h('span', 'ref-in', where));
    head.append(typeNode(schema));
    head.append(h('span', required ? 'ref-required' : 'ref-optional', required ? 'required' : 'optional'));
    item.append(head);
    const details = [...constraintNodes(schema)];
    if (description || details.length) {
      const line = h('p', 'ref-field-text');
      if (description) line.append(prose('span', description));
      line.append(...details);
      item.append(line);
    }
    list.append(item);
  }
  return list;
}

// JSON Schema, in words ------------------------------------------------------------

/** A type as a node: `string`, `integer`, `"a" | "b"`, `array of Job`, links for $refs. */
function typeNode(schema) {
  const span = h('span', 'ref-type');
  describe(schema, (part) => span.append(part));
  return span;
}

function describe(schema, add) {
  if (schema.$ref) {
    add(schemaLink(refName(schema.$ref)));
  } else if (schema.enum) {
    add(schema.enum.map((value) => JSON.stringify(value)).join(' | '));
  } else if ('const' in schema) {
    add(JSON.stringify(schema.const));
  } else if (schema.anyOf || schema.oneOf) {
    const options = schema.anyOf ?? schema.oneOf;
    const real = options.filter((option) => option.type !== 'null');
    real.forEach((option, index) => {
      if (index) add(' | ');
      describe(option, add);
    });
    if (real.length < options.length) add(' | null');
  } else if (schema.type === 'array') {
    add('array of ');
    if (schema.items) describe(schema.items, add);
    else add('anything');
  } else if (Array.isArray(schema.type)) {
    add(schema.type.join(' | '));
  } else if (schema.type === 'object' || schema.properties) {
    add(schema.additionalProperties ? 'object (any keys)' : 'object');
  } else {
    add(schema.type ?? 'any JSON value');
  }
  if (schema.format) add(` (${schema.format})`);
}

/** Constraints, defaults and flags as small chips, from the schema and its branches. */
function constraintNodes(schema) {
  const words = [];
  for (const part of [schema, ...branches(schema)]) {
    const range = (low, high, unit) => {
      if (low !== undefined && high !== undefined) words.push(`${unit} ${low}–${high}`);
      else if (low !== undefined) words.push(`${unit} ≥ ${low}`);
      else if (high !== undefined) words.push(`${unit} ≤ ${high}`);
    };
    range(part.minLength, part.maxLength, 'length');
    range(part.minItems, part.maxItems, 'items');
    range(part.minimum, part.maximum, 'value');
    if (part.exclusiveMinimum !== undefined) words.push(`value > ${part.exclusiveMinimum}`);
    if (part.exclusiveMaximum !== undefined) words.push(`value < ${part.exclusiveMaximum}`);
    if (part.pattern) words.push(`pattern ${part.pattern}`);
  }
  if (schema.default !== undefined && schema.default !== null) words.push(`default ${JSON.stringify(schema.default)}`);
  if (schema.readOnly) words.push('read-only');
  if (schema.deprecated) words.push('deprecated');
  return words.map((word) => h('span', 'ref-chip', word));
}

function branches(schema) {
  return (schema.anyOf ?? schema.oneOf ?? schema.allOf ?? []).filter((b) => b.type !== 'null');
}

function resolve(value) {
  let target = value;
  for (let depth = 0; target?.$ref && depth < 10; depth += 1) {
    const path = target.$ref.replace(/^#\//, '').split('/');
    target = path.reduce((node, key) => node?.[key.replace(/~1/g, '/').replace(/~0/g, '~')], doc) ?? {};
  }
  return target ?? {};
}

function refName(ref) {
  return ref.split('/').pop();
}

function schemaLink(name) {
  const link = h('a', 'ref-schema-link', name);
  link.href = `#schema-${name}`;
  return link;
}

function schemeText(scheme) {
  if (scheme.type === 'http') return `HTTP ${scheme.scheme}`;
  if (scheme.type === 'apiKey') return `${scheme.name} in the ${scheme.in}`;
  return scheme.type ?? '';
}

// Helpers -------------------------------------------------------------------------------

function anchor(method, path, op) {
  return op.operationId ?? `${method}-${path.replace(/[^A-Za-z0-9]+/g, '-')}`;
}

function methodTag(method) {
  return h('span', `ref-method is-${method}`, method.toUpperCase());
}

/** Text with `code` in backticks, as text and <code> nodes. */
function prose(tag, text, className) {
  const node = h(tag, className);
  String(text)
    .split('`')
    .forEach((part, index) => {
      if (part) node.append(index % 2 ? h('code', 'ref-code', part) : part);
    });
  return node;
}

function h(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}
