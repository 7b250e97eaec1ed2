// ComfyUI-InfiniteTalk: saved workflows of older node schemas, migrated when they load in the editor.
//
// Workflows store widget values by position, so a node whose inputs change would load them into the wrong
// widgets. Before the graph is configured, this rewrites the serialised nodes of older layouts:
// - the 26-input InfiniteTalk Sampler: the expert values move to an InfiniteTalk Sampler Options node
//   connected to the sampler's `options` input, the remaining values go to the sampler's widgets by name;
// - InfiniteTalk Video Combine before its format/loudness/preset/true_peak widgets: values by name, the new
//   widgets keep their defaults.
// The same rules migrate API prompts on the server (nodes/_migrate.py). Layouts are taken from freshly
// created nodes, so the result is what this front end itself would save.
import { app } from "../../../scripts/app.js";

const SAMPLER = "InfiniteTalkSampler";
const OPTIONS = "InfiniteTalkSamplerOptions";
const OPTIONS_TYPE = "INFINITETALK_SAMPLER_OPTIONS";
const LEGACY_WIDGETS = [
  "mode", "size", "width", "height", "steps", "seed", "control_after_generate", "text_scale",
  "audio_scale", "shift", "scheduler", "frame_num", "motion_frame", "max_frames", "color_correction",
  "apg", "teacache", "speaker_boxes", "resume",
];
// the same with face_only (saved briefly before the options node existed)
const LEGACY_WIDGETS_FACE = [...LEGACY_WIDGETS.slice(0, -1), "face_only", "resume"];
const SCHEDULERS = ["euler", "unipc", "dpm++"];
const COMBINE = "InfiniteTalkVideoCombine";
const LEGACY_COMBINE_WIDGETS = ["captions", "filename_prefix", "fps", "crf"];

function isLegacyCombine(node) {
  const v = node?.widgets_values;
  return (
    node?.type === COMBINE &&
    Array.isArray(v) &&
    v.length === LEGACY_COMBINE_WIDGETS.length &&
    typeof v[1] === "string" &&
    typeof v[2] === "number"
  );
}

function legacySamplerLayout(node) {
  const v = node?.widgets_values;
  const layout = [LEGACY_WIDGETS, LEGACY_WIDGETS_FACE].find((names) => names.length === v?.length);
  const ok =
    node?.type === SAMPLER &&
    layout &&
    typeof v[9] === "number" && // shift
    SCHEDULERS.includes(v[10]); // scheduler
  return ok ? layout : null;
}

function template(type) {
  const node = globalThis.LiteGraph.createNode(type);
  if (!node) throw new Error(`InfiniteTalk migration: node type ${type} is not registered`);
  const widgets = (node.widgets || []).filter((w) => w.serialize !== false);
  return {
    data: node.serialize(),
    widgets: widgets.map((w) => w.name),
    defaults: Object.fromEntries(widgets.map((w) => [w.name, w.value])),
  };
}

// Links are arrays [id, origin_id, origin_slot, target_id, target_slot, type] (schema 0.4) or objects.
function linkOf(graph, id) {
  return (graph.links || []).find((l) => (Array.isArray(l) ? l[0] : l.id) === id);
}

function retarget(link, targetId, targetSlot) {
  if (Array.isArray(link)) {
    link[3] = targetId;
    link[4] = targetSlot;
  } else {
    link.target_id = targetId;
    link.target_slot = targetSlot;
  }
}

function dropLink(graph, id) {
  const link = linkOf(graph, id);
  graph.links = (graph.links || []).filter((l) => l !== link);
  const originId = Array.isArray(link) ? link[1] : link?.origin_id;
  const origin = (graph.nodes || []).find((n) => n.id === originId);
  for (const out of origin?.outputs || []) if (out.links) out.links = out.links.filter((l) => l !== id);
}

function addLink(graph, link) {
  const schema1 = (graph.links || []).some((l) => !Array.isArray(l));
  const [id, originId, originSlot, targetId, targetSlot, type] = link;
  graph.links = graph.links || [];
  graph.links.push(
    schema1
      ? { id, origin_id: originId, origin_slot: originSlot, target_id: targetId, target_slot: targetSlot, type }
      : link,
  );
}

function nextIds(graph) {
  const state = graph.state;
  if (state && typeof state.lastNodeId === "number") {
    return { node: () => ++state.lastNodeId, link: () => ++state.lastLinkId };
  }
  return { node: () => (graph.last_node_id = (graph.last_node_id || 0) + 1), link: () => (graph.last_link_id = (graph.last_link_id || 0) + 1) };
}

function migrateSampler(graph, node, ids, layout) {
  const values = Object.fromEntries(layout.map((name, i) => [name, node.widgets_values[i]]));
  const sampler = template(SAMPLER);
  const options = template(OPTIONS);
  const optionsNode = {
    ...options.data,
    id: ids.node(),
    pos: [node.pos?.[0] ?? 0, (node.pos?.[1] ?? 0) + (sampler.data.size?.[1] ?? 400) + 40],
    widgets_values: options.widgets.map((name) => (name in values ? values[name] : options.defaults[name])),
    inputs: (options.data.inputs || []).map((inp) => ({ ...inp, link: null })),
    outputs: (options.data.outputs || []).map((out) => ({ ...out, links: [] })),
  };
  node.widgets_values = sampler.widgets.map((name) => (name in values ? values[name] : sampler.defaults[name]));
  node.size = sampler.data.size ?? node.size;
  relinkByName(graph, node, sampler, (old, link) => {
    const slot = optionsNode.inputs.findIndex((i) => i.name === old.name); // a converted expert widget
    if (slot < 0) return false;
    optionsNode.inputs[slot].link = old.link;
    retarget(link, optionsNode.id, slot);
    return true;
  });
  const slot = node.inputs.findIndex((i) => i.name === "options");
  const linkId = ids.link();
  addLink(graph, [linkId, optionsNode.id, 0, node.id, slot, OPTIONS_TYPE]);
  node.inputs[slot].link = linkId;
  optionsNode.outputs[0].links = [linkId];
  graph.nodes.push(optionsNode);
}

// Inputs of a fresh node, links of the old one carried over by input name (others dropped).
function relinkByName(graph, node, fresh, elsewhere = null) {
  const oldInputs = node.inputs || [];
  node.inputs = (fresh.data.inputs || []).map((inp) => ({ ...inp, link: null }));
  for (const old of oldInputs) {
    if (old.link == null) continue;
    const link = linkOf(graph, old.link);
    if (!link) continue;
    const slot = node.inputs.findIndex((i) => i.name === old.name);
    if (slot >= 0) {
      node.inputs[slot].link = old.link;
      retarget(link, node.id, slot);
    } else if (!elsewhere?.(old, link)) {
      dropLink(graph, old.link);
    }
  }
}

function migrateCombine(graph, node) {
  const values = Object.fromEntries(LEGACY_COMBINE_WIDGETS.map((name, i) => [name, node.widgets_values[i]]));
  const fresh = template(COMBINE);
  node.widgets_values = fresh.widgets.map((name) => (name in values ? values[name] : fresh.defaults[name]));
  relinkByName(graph, node, fresh);
}

export function migrateWorkflow(graph) {
  let migrated = 0;
  const graphs = [graph, ...(graph?.definitions?.subgraphs || [])];
  const ids = nextIds(graph); // one counter: ids stay unique across the root graph and its subgraphs
  for (const g of graphs) {
    for (const node of [...(g.nodes || [])]) {
      const layout = legacySamplerLayout(node);
      if (layout) migrateSampler(g, node, ids, layout);
      else if (isLegacyCombine(node)) migrateCombine(g, node);
      else continue;
      migrated += 1;
    }
  }
  if (migrated) console.info(`InfiniteTalk: migrated ${migrated} node(s) of an older workflow`);
  return migrated;
}

app.registerExtension({
  name: "InfiniteTalk.MigrateWorkflows",
  async beforeConfigureGraph(graphData) {
    try {
      migrateWorkflow(graphData);
    } catch (err) {
      console.error("InfiniteTalk: could not migrate an older workflow", err);
    }
  },
});
