// Front-end entry of the Mix-of-Show pack: the only file that imports the host's app module.
import { app } from "../../scripts/app.js";
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

// Region Boxes node: the box editor widget, with the linked image (e.g. a pose) as background.
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
      const size = this.computeSize();
      this.setSize([Math.max(size[0], 320), Math.max(size[1], 420)]);
      return result;
    };
    const onDrawBackground = nodeType.prototype.onDrawBackground;
    nodeType.prototype.onDrawBackground = function () {
      const result = onDrawBackground?.apply(this, arguments);
      const link = this.inputs?.find((i) => i.name === "image")?.link;
      const source = link != null ? app.graph.links[link] : null;
      const image = source ? app.graph.getNodeById(source.origin_id)?.imgs?.[0] : null;
      if (this.mixofshowEditor && image && this.mixofshowEditor.state.image !== image) this.mixofshowEditor.setImage(image);
      return result;
    };
  },
});
