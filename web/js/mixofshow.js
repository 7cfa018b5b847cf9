// Front-end entry of the Mix-of-Show pack: the only file that imports the host's app module.
import { app } from "../../../scripts/app.js";  // served at /extensions/<pack>/js/mixofshow.js
import { attachRegionEditor } from "./region_box/widget.js";

const CONCEPT_WORD = /<[^<>\s]+>/g;

// The ED-LoRA Text Encode node's context menu lists the concept words its prompt uses.
app.registerExtension({
  name: "MixOfShow.Core",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "EDLoRATextEncode") return;
    const original = nodeType.prototype.getExtraMenuOptions;
    nodeType.prototype.getExtraMenuOptions = function (canvas, options) {
      const result = original?.apply(this, arguments);
      const text = this.widgets?.find((w) => w.name === "text")?.value ?? "";
      const words = [...new Set(text.match(CONCEPT_WORD) ?? [])];
      options.unshift({ content: `Concept words: ${words.join(" ") || "none"}`, disabled: true });
      return result;
    };
  },
});

// Region Boxes node: the box editor widget, shaped like the image being made, with the linked image (e.g.
// a pose) as background (see region_box/widget.js).
app.registerExtension({
  name: "MixOfShow.RegionBox",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "RegionBoxes") return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      // The node in this node's graph under its id: itself, or after it was removed, the node that took
      // its id (see widget.js).
      const node = this;
      this.mixofshowEditor = attachRegionEditor(this, () => (node.graph ?? app.graph)?.getNodeById?.(node.id));
      this.setSize([Math.max(this.size[0], 320), this.size[1]]);
      this.setSize([this.size[0], this.computeSize()[1]]);  // the editor's height depends on the width
      return result;
    };
  },
});
