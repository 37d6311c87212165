'use strict';
// Tiny command-line parser shared by the spec clients: "--name value" pairs,
// "--flag" booleans, and repeatable options collected in order in `steps`.
module.exports = function parse(argv, { flags = [], repeat = [] } = {}) {
  const opts = { steps: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument: ${a}`);
    const name = a.slice(2);
    if (flags.includes(name)) { opts[name] = true; continue; }
    if (i + 1 >= argv.length) throw new Error(`missing value for ${a}`);
    const value = argv[++i];
    if (repeat.includes(name)) opts.steps.push([name, value]);
    else opts[name] = value;
  }
  return opts;
};
