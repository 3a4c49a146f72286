//! Layered left-to-right drawing of a job's task graph.
//!
//! [`layout`] follows the Sugiyama method in four phases:
//!
//! 1. Layering: a task's layer is the length of the longest `needs` path
//!    that reaches it, so every task sits right of all the tasks it needs.
//! 2. Dummy nodes: an edge spanning several layers passes through one dummy
//!    node in each layer between its ends, so it runs between the tasks of
//!    those layers instead of through them.
//! 3. Ordering: sweeps down and up the layers sort each layer by the
//!    barycenter of its neighbours in the layer just placed, then swap
//!    adjacent nodes while a swap removes crossings. The order with the
//!    fewest crossings seen wins.
//! 4. Coordinates: x follows the layer. y starts from the order, then each
//!    layer moves towards its neighbours' mean height without changing the
//!    order or closing the gaps.
//!
//! Each weakly connected component is laid out on its own, and the
//! components are stacked top to bottom in the declaration order of their
//! first task. Every tie is broken by declaration order, so the same input
//! always gives the same layout.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;

use crate::api::Edge;

/// Sizes and effort of a [`layout`], in CSS pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    pub node_width: f64,
    pub node_height: f64,
    /// Horizontal space between two layers, where edges bend.
    pub layer_gap: f64,
    /// Vertical space between two tasks of one layer.
    pub node_gap: f64,
    /// Vertical space an edge passing through a layer keeps from a task or
    /// from another passing edge. Values below 1 can make passing edges
    /// share a height.
    pub edge_gap: f64,
    /// Vertical space between two stacked components.
    pub component_gap: f64,
    /// Space around the whole drawing.
    pub margin: f64,
    /// Ordering passes, each a sweep down and a sweep up the layers. `0`
    /// keeps the declaration order: tasks in the order given, then the
    /// dummy nodes of long edges in edge order.
    pub passes: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            node_width: 200.0,
            node_height: 56.0,
            layer_gap: 64.0,
            node_gap: 16.0,
            edge_gap: 10.0,
            component_gap: 32.0,
            margin: 16.0,
            passes: 12,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub x: f64,
    pub y: f64,
}

/// A task's box.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub name: String,
    /// Index of the task in the `names` given to [`layout`].
    pub task: usize,
    pub layer: usize,
    /// Position among the tasks of `layer`, counted from the top over all
    /// components.
    pub order: usize,
    /// Index of the stacked component, counted from the top.
    pub component: usize,
    /// Left side of the box.
    pub x: f64,
    /// Top side of the box.
    pub y: f64,
}

/// The drawn route of one `needs` edge.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// Index in [`Layout::nodes`] of the task that must finish first.
    pub from: usize,
    /// Index in [`Layout::nodes`] of the task that waits for `from`.
    pub to: usize,
    /// Polyline from the middle of `from`'s right side to the middle of
    /// `to`'s left side. Each layer the edge passes adds two points at one
    /// height, where it enters and leaves that layer's column, so
    /// `points.chunks(2)` are the hops between neighbouring layers.
    pub points: Vec<Point>,
    /// The route as an SVG path `d`: a cubic curve for each hop between
    /// layers and a straight line through each layer passed.
    pub path: String,
}

/// A laid-out task graph; see the module documentation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Layout {
    /// Tasks by layer, then top to bottom: the order to tab through them.
    pub nodes: Vec<Node>,
    /// Drawn edges, in the order given to [`layout`].
    pub edges: Vec<Route>,
    /// Size of the whole drawing, margins included.
    pub width: f64,
    pub height: f64,
}

/// An arrow key's move between nodes; see [`Layout::neighbor`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Left,
    Right,
    Up,
    Down,
}

impl Layout {
    /// Returns the index in [`Layout::nodes`] of the task called `name`.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.name == name)
    }

    /// Returns the node an arrow key moves to from node `from`: the one above
    /// or below in the same layer, or the one nearest in height in the
    /// layer to the left or right (the upper one on a tie). `None` at an
    /// edge of the drawing.
    pub fn neighbor(&self, from: usize, direction: Direction) -> Option<usize> {
        let node = self.nodes.get(from)?;
        let same_layer = |index: usize| {
            self.nodes
                .get(index)
                .is_some_and(|other| other.layer == node.layer)
        };
        match direction {
            Direction::Up => from.checked_sub(1).filter(|&index| same_layer(index)),
            Direction::Down => Some(from + 1).filter(|&index| same_layer(index)),
            Direction::Left => node
                .layer
                .checked_sub(1)
                .and_then(|layer| self.nearest_in_layer(layer, node.y)),
            Direction::Right => self.nearest_in_layer(node.layer + 1, node.y),
        }
    }

    fn nearest_in_layer(&self, layer: usize, y: f64) -> Option<usize> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, node)| node.layer == layer)
            .min_by(|(_, a), (_, b)| (a.y - y).abs().total_cmp(&(b.y - y).abs()))
            .map(|(index, _)| index)
    }
}

/// Lays out the tasks `names` with the `needs` edges `edges`.
///
/// Edges naming an unknown task, self-edges and repeated edges are ignored,
/// and so is a repeated task name after its first use. The engine only
/// plans acyclic graphs, but an edge that would close a cycle is dropped
/// rather than looping: the first task of the cycle in declaration order
/// loses its edges from the rest of the cycle.
pub fn layout<S: AsRef<str>>(names: &[S], edges: &[Edge], params: &Params) -> Layout {
    let mut graph = Graph::new(names, edges);
    let layer_of = graph.rank();

    let mut boxes = Vec::new();
    let mut routes = Vec::new();
    let mut top = params.margin;
    let mut layer_count = 0;
    for (component, tasks) in graph.components().into_iter().enumerate() {
        let mut ranked = Ranked::new(&graph, &layer_of, &tasks);
        ranked.order(params.passes);
        let (centers, height) = ranked.heights(params);

        for (item, center) in ranked.items.iter().zip(&centers) {
            if let Some(task) = item.task {
                boxes.push(Placed {
                    task,
                    layer: item.layer,
                    component,
                    y: (top + center - params.node_height / 2.0).round(),
                });
            }
        }
        for (edge, chain) in &ranked.chains {
            let (from, to) = graph.edges[*edge];
            let points = route_points(chain, &centers, top, layer_of[from], params);
            routes.push((*edge, from, to, points));
        }

        layer_count = layer_count.max(ranked.layers.len());
        top += height + params.component_gap;
    }

    assemble(&graph, boxes, routes, layer_count, top, params)
}

/// Returns the polyline of an edge whose items are `chain`, from layer
/// `from_layer` on, in a component whose top is at `top`.
fn route_points(
    chain: &[usize],
    centers: &[f64],
    top: f64,
    from_layer: usize,
    params: &Params,
) -> Vec<Point> {
    let column = params.node_width + params.layer_gap;
    // The middle of a task's side, below its box's rounded top.
    let port = |item: usize| {
        (top + centers[item] - params.node_height / 2.0).round() + params.node_height / 2.0
    };
    let (first, last) = (chain[0], chain[chain.len() - 1]);

    let mut points = vec![Point {
        x: params.margin + from_layer as f64 * column + params.node_width,
        y: port(first),
    }];
    for (hop, &dummy) in chain[1..chain.len() - 1].iter().enumerate() {
        let x = params.margin + (from_layer + hop + 1) as f64 * column;
        let y = (top + centers[dummy]).round();
        points.push(Point { x, y });
        points.push(Point {
            x: x + params.node_width,
            y,
        });
    }
    points.push(Point {
        x: params.margin + (from_layer + chain.len() - 1) as f64 * column,
        y: port(last),
    });
    points
}

/// Counts the pairs of edges that cross between neighbouring layers.
///
/// Two hops between the same two layers cross when their order at one end
/// is the reverse of their order at the other. Hops sharing an end do not
/// cross.
pub fn crossings(layout: &Layout) -> usize {
    let mut hops_by_gap: HashMap<usize, Vec<(f64, f64)>> = HashMap::new();
    for route in &layout.edges {
        let Some(from) = layout.nodes.get(route.from) else {
            continue;
        };
        for (hop, pair) in route.points.chunks_exact(2).enumerate() {
            hops_by_gap
                .entry(from.layer + hop)
                .or_default()
                .push((pair[0].y, pair[1].y));
        }
    }
    hops_by_gap
        .into_values()
        .map(|mut hops| {
            hops.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
            let mut ends: Vec<f64> = hops.into_iter().map(|hop| hop.1).collect();
            count_inversions(&mut ends)
        })
        .sum()
}

/// The input with unknown, repeated and self edges removed.
struct Graph {
    names: Vec<String>,
    /// Index of each task in the caller's `names`.
    declared_at: Vec<usize>,
    /// Kept edges as task indices, in the caller's order.
    edges: Vec<(usize, usize)>,
}

impl Graph {
    fn new<S: AsRef<str>>(names: &[S], edges: &[Edge]) -> Graph {
        let mut index = HashMap::new();
        let mut graph = Graph {
            names: Vec::new(),
            declared_at: Vec::new(),
            edges: Vec::new(),
        };
        for (declared_at, name) in names.iter().enumerate() {
            let name = name.as_ref();
            if !index.contains_key(name) {
                index.insert(name, graph.names.len());
                graph.names.push(name.to_owned());
                graph.declared_at.push(declared_at);
            }
        }

        let mut seen = HashSet::new();
        for edge in edges {
            let (Some(&from), Some(&to)) =
                (index.get(edge.from.as_str()), index.get(edge.to.as_str()))
            else {
                continue;
            };
            if from != to && seen.insert((from, to)) {
                graph.edges.push((from, to));
            }
        }
        graph
    }

    /// Drops the edges that close cycles and returns each task's layer: the
    /// length of the longest path of kept edges that ends at it.
    fn rank(&mut self) -> Vec<usize> {
        let count = self.names.len();
        let mut incoming = vec![Vec::new(); count];
        let mut outgoing = vec![Vec::new(); count];
        for (edge, &(from, to)) in self.edges.iter().enumerate() {
            outgoing[from].push(edge);
            incoming[to].push(edge);
        }
        let mut waiting_on: Vec<usize> = incoming.iter().map(Vec::len).collect();
        let mut ready: BTreeSet<usize> = (0..count).filter(|&task| waiting_on[task] == 0).collect();
        let mut kept = vec![true; self.edges.len()];
        let mut done = vec![false; count];
        let mut layer = vec![0; count];

        // Kahn's topological sort, taking the first declared ready task each
        // time. When no task is ready the rest is cyclic, so the first
        // remaining task drops its edges from unfinished tasks.
        for _ in 0..count {
            let task = match ready.pop_first() {
                Some(task) => task,
                None => {
                    let Some(task) = (0..count).find(|&task| !done[task]) else {
                        break;
                    };
                    for &edge in &incoming[task] {
                        if !done[self.edges[edge].0] {
                            kept[edge] = false;
                        }
                    }
                    task
                }
            };
            done[task] = true;
            layer[task] = incoming[task]
                .iter()
                .filter(|&&edge| kept[edge])
                .map(|&edge| layer[self.edges[edge].0] + 1)
                .max()
                .unwrap_or(0);
            for &edge in &outgoing[task] {
                let next = self.edges[edge].1;
                if kept[edge] && !done[next] {
                    waiting_on[next] -= 1;
                    if waiting_on[next] == 0 {
                        ready.insert(next);
                    }
                }
            }
        }

        let mut flags = kept.into_iter();
        self.edges.retain(|_| flags.next().unwrap_or(false));
        layer
    }

    /// Groups the tasks into weakly connected components, each listed in
    /// declaration order, ordered by their first task.
    fn components(&self) -> Vec<Vec<usize>> {
        let mut parent: Vec<usize> = (0..self.names.len()).collect();
        fn root(parent: &mut [usize], mut task: usize) -> usize {
            while parent[task] != task {
                parent[task] = parent[parent[task]];
                task = parent[task];
            }
            task
        }
        for &(from, to) in &self.edges {
            let (a, b) = (root(&mut parent, from), root(&mut parent, to));
            // The smaller index becomes the root, so a root is its
            // component's first task.
            parent[a.max(b)] = a.min(b);
        }

        let mut component_of_root = HashMap::new();
        let mut components: Vec<Vec<usize>> = Vec::new();
        for task in 0..self.names.len() {
            let task_root = root(&mut parent, task);
            let component = *component_of_root.entry(task_root).or_insert_with(|| {
                components.push(Vec::new());
                components.len() - 1
            });
            components[component].push(task);
        }
        components
    }
}

/// A task or a dummy node of one component's proper layered graph, where
/// every edge joins neighbouring layers.
struct Item {
    /// `None` for a dummy node.
    task: Option<usize>,
    layer: usize,
    /// Neighbours in the layer to the left.
    ups: Vec<usize>,
    /// Neighbours in the layer to the right.
    downs: Vec<usize>,
}

struct Ranked {
    items: Vec<Item>,
    /// Items of each layer, top to bottom.
    layers: Vec<Vec<usize>>,
    /// Each kept edge of the component with its items from `from` to `to`.
    chains: Vec<(usize, Vec<usize>)>,
}

impl Ranked {
    fn new(graph: &Graph, layer_of: &[usize], tasks: &[usize]) -> Ranked {
        let mut items: Vec<Item> = tasks
            .iter()
            .map(|&task| Item {
                task: Some(task),
                layer: layer_of[task],
                ups: Vec::new(),
                downs: Vec::new(),
            })
            .collect();
        let item_of: HashMap<usize, usize> = tasks
            .iter()
            .enumerate()
            .map(|(item, &task)| (task, item))
            .collect();

        let mut chains = Vec::new();
        for (edge, &(from, to)) in graph.edges.iter().enumerate() {
            let Some(&first) = item_of.get(&from) else {
                continue;
            };
            let mut chain = vec![first];
            for layer in layer_of[from] + 1..layer_of[to] {
                items.push(Item {
                    task: None,
                    layer,
                    ups: Vec::new(),
                    downs: Vec::new(),
                });
                chain.push(items.len() - 1);
            }
            chain.push(item_of[&to]);
            for pair in chain.windows(2) {
                items[pair[0]].downs.push(pair[1]);
                items[pair[1]].ups.push(pair[0]);
            }
            chains.push((edge, chain));
        }

        let layer_count = items.iter().map(|item| item.layer + 1).max().unwrap_or(0);
        let mut layers = vec![Vec::new(); layer_count];
        for (index, item) in items.iter().enumerate() {
            layers[item.layer].push(index);
        }
        Ranked {
            items,
            layers,
            chains,
        }
    }

    /// Orders each layer to keep crossings few; see the module documentation.
    fn order(&mut self, passes: usize) {
        const STALE_PASSES: usize = 3;
        let mut position = vec![0; self.items.len()];
        index_positions(&self.layers, &mut position);
        let mut best = self.layers.clone();
        let mut fewest = self.crossings(&position);

        // Sweeps tend to settle into a cycle of a few orders, so a few
        // passes without a better order end the search early.
        let mut stale = 0;
        for _ in 0..passes {
            if fewest == 0 || stale >= STALE_PASSES {
                break;
            }
            stale += 1;
            for downward in [true, false] {
                self.sweep(downward, &mut position);
                self.transpose(&mut position);
                let count = self.crossings(&position);
                if count < fewest {
                    fewest = count;
                    best.clone_from(&self.layers);
                    stale = 0;
                }
            }
        }
        self.layers = best;
    }

    /// Sorts each layer by the mean position of its neighbours in the layer
    /// placed just before it. An item without such neighbours keeps its
    /// position as its key.
    fn sweep(&mut self, downward: bool, position: &mut [usize]) {
        let count = self.layers.len();
        let layers: Vec<usize> = if downward {
            (1..count).collect()
        } else {
            (0..count.saturating_sub(1)).rev().collect()
        };
        for layer in layers {
            let mut keyed: Vec<(f64, usize)> = self.layers[layer]
                .iter()
                .map(|&item| {
                    let item_ref = &self.items[item];
                    let neighbours = if downward {
                        &item_ref.ups
                    } else {
                        &item_ref.downs
                    };
                    let key = if neighbours.is_empty() {
                        position[item] as f64
                    } else {
                        let sum: usize = neighbours.iter().map(|&other| position[other]).sum();
                        sum as f64 / neighbours.len() as f64
                    };
                    (key, item)
                })
                .collect();
            // A stable sort, so equal keys keep their current order.
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
            self.layers[layer] = keyed.into_iter().map(|(_, item)| item).collect();
            for (index, &item) in self.layers[layer].iter().enumerate() {
                position[item] = index;
            }
        }
    }

    /// Swaps neighbouring items of a layer while that removes crossings.
    /// Every swap lowers the total, so this ends.
    fn transpose(&mut self, position: &mut [usize]) {
        let mut improved = true;
        let mut rounds = 0;
        while improved {
            rounds += 1;
            if std::env::var("TR").is_ok_and(|v| rounds > v.parse::<usize>().unwrap()) {
                break;
            }
            improved = false;
            for layer in 0..self.layers.len() {
                for index in 1..self.layers[layer].len() {
                    let (upper, lower) = (self.layers[layer][index - 1], self.layers[layer][index]);
                    if self.pair_crossings(lower, upper, position)
                        < self.pair_crossings(upper, lower, position)
                    {
                        self.layers[layer].swap(index - 1, index);
                        position[upper] = index;
                        position[lower] = index - 1;
                        improved = true;
                    }
                }
            }
        }
    }

    /// Crossings among the edges of `upper` and `lower` when `upper` sits
    /// just above `lower`.
    fn pair_crossings(&self, upper: usize, lower: usize, position: &[usize]) -> usize {
        let count = |mine: &[usize], theirs: &[usize]| {
            mine.iter()
                .map(|&a| {
                    theirs
                        .iter()
                        .filter(|&&b| position[a] > position[b])
                        .count()
                })
                .sum::<usize>()
        };
        let (upper, lower) = (&self.items[upper], &self.items[lower]);
        count(&upper.ups, &lower.ups) + count(&upper.downs, &lower.downs)
    }

    fn crossings(&self, position: &[usize]) -> usize {
        self.layers
            .iter()
            .map(|layer| {
                let mut hops: Vec<(usize, usize)> = layer
                    .iter()
                    .flat_map(|&item| {
                        self.items[item]
                            .downs
                            .iter()
                            .map(move |&down| (position[item], position[down]))
                    })
                    .collect();
                hops.sort_unstable();
                let mut ends: Vec<usize> = hops.into_iter().map(|hop| hop.1).collect();
                count_inversions(&mut ends)
            })
            .sum()
    }

    /// Returns each item's vertical center and the component's height,
    /// with the top of the component at 0.
    fn heights(&self, params: &Params) -> (Vec<f64>, f64) {
        const ROUNDS: usize = 8;
        let size = |item: usize| {
            if self.items[item].task.is_some() {
                params.node_height
            } else {
                0.0
            }
        };

        // The minimum center of each item when its layer is packed from 0.
        let mut packed = vec![0.0; self.items.len()];
        for layer in &self.layers {
            for pair in layer.windows(2) {
                let gap =
                    if self.items[pair[0]].task.is_some() && self.items[pair[1]].task.is_some() {
                        params.node_gap
                    } else {
                        params.edge_gap
                    };
                packed[pair[1]] = packed[pair[0]] + (size(pair[0]) + size(pair[1])) / 2.0 + gap;
            }
        }

        let mut center = packed.clone();
        let place = |layer: &[usize], use_ups: bool, use_downs: bool, center: &mut Vec<f64>| {
            let wishes: Vec<(f64, f64)> = layer
                .iter()
                .map(|&item| {
                    let item_ref = &self.items[item];
                    let mut neighbours: Vec<usize> = Vec::new();
                    if use_ups {
                        neighbours.extend(&item_ref.ups);
                    }
                    if use_downs {
                        neighbours.extend(&item_ref.downs);
                    }
                    if neighbours.is_empty() {
                        // Nothing pulls it, so it yields to its neighbours.
                        return (center[item], 0.25);
                    }
                    let mean = neighbours.iter().map(|&other| center[other]).sum::<f64>()
                        / neighbours.len() as f64;
                    // Dummy nodes weigh more, which keeps long edges straight.
                    let weight = if item_ref.task.is_some() { 1.0 } else { 4.0 };
                    (mean, weight)
                })
                .collect();
            let offsets: Vec<f64> = layer.iter().map(|&item| packed[item]).collect();
            for (&item, y) in layer.iter().zip(closest_spaced(&wishes, &offsets)) {
                center[item] = y;
            }
        };
        for _ in 0..ROUNDS {
            for layer in self.layers.iter().skip(1) {
                place(layer, true, false, &mut center);
            }
            for layer in self.layers.iter().rev().skip(1) {
                place(layer, false, true, &mut center);
            }
        }
        for layer in &self.layers {
            place(layer, true, true, &mut center);
        }

        let top = (0..self.items.len())
            .map(|item| center[item] - size(item) / 2.0)
            .fold(f64::INFINITY, f64::min);
        let bottom = (0..self.items.len())
            .map(|item| center[item] + size(item) / 2.0)
            .fold(f64::NEG_INFINITY, f64::max);
        if top.is_finite() {
            for y in &mut center {
                *y -= top;
            }
            (center, bottom - top)
        } else {
            (center, 0.0)
        }
    }
}

/// Returns the heights `y` that minimise `Σ weight · (y - wish)²` over
/// `wishes` of `(wish, weight)` while keeping every `y[i + 1] - y[i]` at
/// least `offsets[i + 1] - offsets[i]`.
///
/// With `z = y - offsets` the constraint is that `z` never decreases, so
/// this is a weighted isotonic regression, solved by pooling adjacent
/// violators.
fn closest_spaced(wishes: &[(f64, f64)], offsets: &[f64]) -> Vec<f64> {
    // Each block pools a run of items: (weight sum, weighted z sum, length).
    let mut blocks: Vec<(f64, f64, usize)> = Vec::new();
    for (&(wish, weight), offset) in wishes.iter().zip(offsets) {
        blocks.push((weight, weight * (wish - offset), 1));
        while blocks.len() >= 2 {
            let (last, before) = (blocks[blocks.len() - 1], blocks[blocks.len() - 2]);
            if before.1 / before.0 <= last.1 / last.0 {
                break;
            }
            blocks.pop();
            let merged = blocks
                .last_mut()
                .expect("invariant: two blocks were present");
            *merged = (before.0 + last.0, before.1 + last.1, before.2 + last.2);
        }
    }
    let mut ys = Vec::with_capacity(wishes.len());
    for (weight, sum, length) in blocks {
        for _ in 0..length {
            ys.push(sum / weight + offsets[ys.len()]);
        }
    }
    ys
}

/// Counts the pairs `i < j` with `values[i] > values[j]`, sorting `values`.
fn count_inversions<T: Copy + PartialOrd>(values: &mut [T]) -> usize {
    if values.len() < 2 {
        return 0;
    }
    let middle = values.len() / 2;
    let mut count =
        count_inversions(&mut values[..middle]) + count_inversions(&mut values[middle..]);
    let mut merged = Vec::with_capacity(values.len());
    let (mut left, mut right) = (0, middle);
    while left < middle && right < values.len() {
        if values[right] < values[left] {
            // Every value still waiting on the left is greater.
            count += middle - left;
            merged.push(values[right]);
            right += 1;
        } else {
            merged.push(values[left]);
            left += 1;
        }
    }
    merged.extend_from_slice(&values[left..middle]);
    merged.extend_from_slice(&values[right..]);
    values.copy_from_slice(&merged);
    count
}

fn index_positions(layers: &[Vec<usize>], position: &mut [usize]) {
    for layer in layers {
        for (index, &item) in layer.iter().enumerate() {
            position[item] = index;
        }
    }
}

/// A task's box before the tasks are sorted into tab order.
struct Placed {
    task: usize,
    layer: usize,
    component: usize,
    y: f64,
}

fn assemble(
    graph: &Graph,
    mut boxes: Vec<Placed>,
    mut routes: Vec<(usize, usize, usize, Vec<Point>)>,
    layer_count: usize,
    bottom: f64,
    params: &Params,
) -> Layout {
    boxes.sort_by(|a, b| {
        a.layer
            .cmp(&b.layer)
            .then(a.y.total_cmp(&b.y))
            .then(a.task.cmp(&b.task))
    });
    let mut node_of_task = vec![0; graph.names.len()];
    let mut nodes: Vec<Node> = Vec::with_capacity(boxes.len());
    for placed in boxes {
        let order = match nodes.last() {
            Some(last) if last.layer == placed.layer => last.order + 1,
            _ => 0,
        };
        node_of_task[placed.task] = nodes.len();
        nodes.push(Node {
            name: graph.names[placed.task].clone(),
            task: graph.declared_at[placed.task],
            layer: placed.layer,
            order,
            component: placed.component,
            x: params.margin + placed.layer as f64 * (params.node_width + params.layer_gap),
            y: placed.y,
        });
    }

    routes.sort_by_key(|route| route.0);
    let edges = routes
        .into_iter()
        .map(|(_, from, to, points)| Route {
            from: node_of_task[from],
            to: node_of_task[to],
            path: svg_path(&points),
            points,
        })
        .collect();

    if nodes.is_empty() {
        return Layout {
            nodes,
            edges,
            width: 2.0 * params.margin,
            height: 2.0 * params.margin,
        };
    }
    let width = layer_count as f64 * params.node_width
        + layer_count.saturating_sub(1) as f64 * params.layer_gap;
    Layout {
        nodes,
        edges,
        width: width + 2.0 * params.margin,
        // `bottom` is past the last component's gap.
        height: bottom - params.component_gap + params.margin,
    }
}

/// Writes `points` as an SVG path: a horizontal-tangent cubic curve for
/// each hop between layers and a straight line through each layer.
fn svg_path(points: &[Point]) -> String {
    let mut path = String::new();
    for (hop, pair) in points.chunks_exact(2).enumerate() {
        let (start, end) = (pair[0], pair[1]);
        let command = if hop == 0 { 'M' } else { 'L' };
        let bend = (start.x + end.x) / 2.0;
        // `fmt::Write` for `String` never returns an error.
        let _ = write!(
            path,
            "{command}{} {} C{} {} {} {} {} {}",
            tidy(start.x),
            tidy(start.y),
            tidy(bend),
            tidy(start.y),
            tidy(bend),
            tidy(end.y),
            tidy(end.x),
            tidy(end.y),
        );
        path.push(' ');
    }
    path.truncate(path.trim_end().len());
    path
}

/// Rounds to one decimal so paths stay short; adding 0 turns `-0` into `0`.
fn tidy(value: f64) -> f64 {
    (value * 10.0).round() / 10.0 + 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(from: &str, to: &str) -> Edge {
        Edge {
            from: from.to_owned(),
            to: to.to_owned(),
        }
    }

    fn edges(pairs: &[(&str, &str)]) -> Vec<Edge> {
        pairs.iter().map(|&(from, to)| edge(from, to)).collect()
    }

    /// Task names per layer, top to bottom.
    fn layer_names(layout: &Layout) -> Vec<Vec<&str>> {
        let mut layers: Vec<Vec<&str>> = Vec::new();
        for node in &layout.nodes {
            if node.layer == layers.len() {
                layers.push(Vec::new());
            }
            assert_eq!(
                node.order,
                layers[node.layer].len(),
                "order of {}",
                node.name
            );
            layers[node.layer].push(&node.name);
        }
        layers
    }

    fn node<'a>(layout: &'a Layout, name: &str) -> &'a Node {
        let index = layout
            .node_index(name)
            .unwrap_or_else(|| panic!("no node {name}"));
        &layout.nodes[index]
    }

    fn unordered() -> Params {
        Params {
            passes: 0,
            ..Params::default()
        }
    }

    /// A reproducible pseudo-random sequence (xorshift64).
    struct Random(u64);

    impl Random {
        fn below(&mut self, bound: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % bound as u64) as usize
        }
    }

    /// `tasks` tasks and about `edge_count` edges, each from a task to a
    /// later one at most `reach` places after it, declared shuffled.
    fn random_graph(
        tasks: usize,
        edge_count: usize,
        reach: usize,
        seed: u64,
    ) -> (Vec<String>, Vec<Edge>) {
        let mut random = Random(seed);
        let mut names: Vec<String> = (0..tasks).map(|task| format!("t{task}")).collect();
        let mut pairs = Vec::new();
        for _ in 0..edge_count {
            let from = random.below(tasks - 1);
            let to = (from + 1 + random.below(reach)).min(tasks - 1);
            pairs.push(edge(&names[from], &names[to]));
        }
        for index in (1..names.len()).rev() {
            names.swap(index, random.below(index + 1));
        }
        (names, pairs)
    }

    #[test]
    fn empty_graph_has_only_margins() {
        let layout = layout::<&str>(&[], &[], &Params::default());
        assert!(layout.nodes.is_empty());
        assert!(layout.edges.is_empty());
        assert_eq!(crossings(&layout), 0);
        assert_eq!((layout.width, layout.height), (32.0, 32.0));
    }

    #[test]
    fn single_task_sits_inside_the_margin() {
        let layout = layout(&["build"], &[], &Params::default());
        assert_eq!(layout.nodes.len(), 1);
        let build = &layout.nodes[0];
        assert_eq!((build.x, build.y), (16.0, 16.0));
        assert_eq!(
            (build.layer, build.order, build.component, build.task),
            (0, 0, 0, 0)
        );
        assert_eq!((layout.width, layout.height), (232.0, 88.0));
    }

    #[test]
    fn fan_out_and_in_centres_the_ends() {
        let names = ["prepare", "lint", "unit_tests", "docs", "package"];
        let pairs = [
            ("prepare", "lint"),
            ("prepare", "unit_tests"),
            ("prepare", "docs"),
            ("lint", "package"),
            ("unit_tests", "package"),
            ("docs", "package"),
        ];
        let layout = layout(&names, &edges(&pairs), &Params::default());

        assert_eq!(
            layer_names(&layout),
            [
                vec!["prepare"],
                vec!["lint", "unit_tests", "docs"],
                vec!["package"]
            ]
        );
        assert_eq!(crossings(&layout), 0);
        let middle = node(&layout, "unit_tests").y;
        assert_eq!(node(&layout, "prepare").y, middle);
        assert_eq!(node(&layout, "package").y, middle);
        assert_eq!(node(&layout, "lint").y, 16.0);
        assert_eq!(
            node(&layout, "docs").y - node(&layout, "lint").y,
            2.0 * (56.0 + 16.0)
        );
        assert_eq!(node(&layout, "package").x, 16.0 + 2.0 * (200.0 + 64.0));
    }

    #[test]
    fn layer_is_the_longest_path_to_a_task() {
        let layout = layout(
            &["deploy", "test", "build"],
            &edges(&[("build", "test"), ("test", "deploy"), ("build", "deploy")]),
            &Params::default(),
        );
        assert_eq!(
            layer_names(&layout),
            [vec!["build"], vec!["test"], vec!["deploy"]]
        );
        assert_eq!(node(&layout, "deploy").task, 0);
    }

    #[test]
    fn long_edge_passes_beside_the_tasks_it_skips() {
        let params = Params::default();
        let layout = layout(
            &["build", "test", "deploy"],
            &edges(&[("build", "test"), ("test", "deploy"), ("build", "deploy")]),
            &params,
        );
        let long = &layout.edges[2];
        assert_eq!(
            (
                layout.nodes[long.from].name.as_str(),
                layout.nodes[long.to].name.as_str()
            ),
            ("build", "deploy")
        );
        assert_eq!(long.points.len(), 4, "one dummy node gives two points");

        let test = node(&layout, "test");
        let passing = long.points[1];
        assert_eq!(passing.x, test.x);
        assert_eq!(
            long.points[2],
            Point {
                x: test.x + params.node_width,
                y: passing.y
            }
        );
        let clearance = if passing.y < test.y {
            test.y - passing.y
        } else {
            passing.y - (test.y + params.node_height)
        };
        assert!(
            clearance >= params.edge_gap,
            "edge passes {clearance}px from `test`"
        );
    }

    #[test]
    fn short_edge_is_one_curve_between_ports() {
        let layout = layout(&["a", "b"], &edges(&[("a", "b")]), &Params::default());
        let route = &layout.edges[0];
        assert_eq!(
            route.points,
            [Point { x: 216.0, y: 44.0 }, Point { x: 280.0, y: 44.0 }]
        );
        assert_eq!(route.path, "M216 44 C248 44 248 44 280 44");
    }

    #[test]
    fn path_runs_straight_through_passed_layers() {
        let layout = layout(
            &["a", "b", "c", "d"],
            &edges(&[("a", "b"), ("b", "c"), ("c", "d"), ("a", "d")]),
            &Params::default(),
        );
        let route = &layout.edges[3];
        assert_eq!(route.points.len(), 6);
        assert_eq!(route.path.matches('C').count(), 3);
        assert_eq!(route.path.matches('L').count(), 2);
        let (enter, leave) = (route.points[1], route.points[2]);
        assert!(
            route
                .path
                .contains(&format!("{} {} L{} {}", enter.x, enter.y, leave.x, leave.y))
        );
    }

    #[test]
    fn barycenter_untangles_crossed_pair() {
        let names = ["root", "a", "b", "x", "y"];
        let pairs = edges(&[("root", "a"), ("root", "b"), ("a", "y"), ("b", "x")]);

        let declared = layout(&names, &pairs, &unordered());
        assert_eq!(
            layer_names(&declared),
            [vec!["root"], vec!["a", "b"], vec!["x", "y"]]
        );
        assert_eq!(crossings(&declared), 1);

        let ordered = layout(&names, &pairs, &Params::default());
        assert_eq!(
            layer_names(&ordered),
            [vec!["root"], vec!["a", "b"], vec!["y", "x"]]
        );
        assert_eq!(crossings(&ordered), 0);
    }

    #[test]
    fn crossings_counts_each_crossed_pair_once() {
        let names = ["root", "a", "b", "c", "x", "y", "z"];
        let pairs = edges(&[
            ("root", "a"),
            ("root", "b"),
            ("root", "c"),
            ("a", "z"),
            ("b", "y"),
            ("c", "x"),
        ]);
        let declared = layout(&names, &pairs, &unordered());
        assert_eq!(
            layer_names(&declared),
            [vec!["root"], vec!["a", "b", "c"], vec!["x", "y", "z"]]
        );
        assert_eq!(crossings(&declared), 3, "edges sharing `root` do not cross");
    }

    #[test]
    fn shuffled_tree_gets_zero_crossings() {
        let names = ["b1", "a2", "root", "b2", "b", "a1", "a"];
        let pairs = edges(&[
            ("root", "a"),
            ("root", "b"),
            ("a", "a1"),
            ("a", "a2"),
            ("b", "b1"),
            ("b", "b2"),
        ]);

        let declared = layout(&names, &pairs, &unordered());
        assert_eq!(
            layer_names(&declared),
            [vec!["root"], vec!["b", "a"], vec!["b1", "a2", "b2", "a1"]]
        );
        assert_eq!(crossings(&declared), 1);

        let ordered = layout(&names, &pairs, &Params::default());
        assert_eq!(
            layer_names(&ordered),
            [vec!["root"], vec!["b", "a"], vec!["b1", "b2", "a2", "a1"]]
        );
        assert_eq!(crossings(&ordered), 0);
    }

    #[test]
    fn components_are_stacked_in_declaration_order() {
        let params = Params::default();
        let layout = layout(
            &["lint", "build", "test", "docs"],
            &edges(&[("build", "test"), ("lint", "docs")]),
            &params,
        );
        assert_eq!(
            layer_names(&layout),
            [vec!["lint", "build"], vec!["docs", "test"]]
        );
        assert_eq!(node(&layout, "lint").component, 0);
        assert_eq!(node(&layout, "docs").component, 0);
        assert_eq!(node(&layout, "build").component, 1);
        assert_eq!(
            node(&layout, "build").y,
            node(&layout, "lint").y + params.node_height + params.component_gap
        );
        assert_eq!(
            layout.height,
            2.0 * params.margin + 2.0 * params.node_height + params.component_gap
        );
    }

    #[test]
    fn unknown_self_and_repeated_edges_are_ignored() {
        let layout = layout(
            &["build", "test"],
            &edges(&[
                ("build", "test"),
                ("ghost", "test"),
                ("build", "nowhere"),
                ("test", "test"),
                ("build", "test"),
            ]),
            &Params::default(),
        );
        assert_eq!(layer_names(&layout), [vec!["build"], vec!["test"]]);
        assert_eq!(layout.edges.len(), 1);
    }

    #[test]
    fn repeated_task_name_is_laid_out_once() {
        let layout = layout(
            &["build", "test", "build"],
            &edges(&[("build", "test")]),
            &Params::default(),
        );
        assert_eq!(layer_names(&layout), [vec!["build"], vec!["test"]]);
        assert_eq!(node(&layout, "build").task, 0);
    }

    #[test]
    fn cycle_drops_the_closing_edge() {
        let layout = layout(
            &["a", "b", "c"],
            &edges(&[("a", "b"), ("b", "c"), ("c", "a")]),
            &Params::default(),
        );
        assert_eq!(layer_names(&layout), [vec!["a"], vec!["b"], vec!["c"]]);
        assert_eq!(layout.edges.len(), 2);
    }

    #[test]
    fn neighbor_follows_arrow_keys() {
        let names = ["prepare", "lint", "unit_tests", "docs", "package"];
        let pairs = edges(&[
            ("prepare", "lint"),
            ("prepare", "unit_tests"),
            ("prepare", "docs"),
            ("lint", "package"),
            ("unit_tests", "package"),
            ("docs", "package"),
        ]);
        let layout = layout(&names, &pairs, &Params::default());
        let index = |name| layout.node_index(name).expect("node exists");
        let step = |from, direction| {
            layout
                .neighbor(index(from), direction)
                .map(|to| layout.nodes[to].name.as_str())
        };

        assert_eq!(step("prepare", Direction::Right), Some("unit_tests"));
        assert_eq!(step("prepare", Direction::Left), None);
        assert_eq!(step("prepare", Direction::Up), None);
        assert_eq!(step("lint", Direction::Down), Some("unit_tests"));
        assert_eq!(step("lint", Direction::Up), None);
        assert_eq!(step("docs", Direction::Down), None);
        assert_eq!(step("docs", Direction::Right), Some("package"));
        assert_eq!(step("package", Direction::Left), Some("unit_tests"));
        assert_eq!(step("package", Direction::Right), None);
        assert_eq!(layout.neighbor(99, Direction::Up), None);
    }

    #[test]
    fn large_graph_is_valid_and_less_crossed() {
        let params = Params::default();
        let (names, pairs) = random_graph(200, 400, 12, 0x5eed);
        let declared = layout(&names, &pairs, &unordered());
        let ordered = layout(&names, &pairs, &params);

        assert_eq!(ordered.nodes.len(), 200);
        assert!(
            ordered.edges.len() > 350,
            "{} edges kept",
            ordered.edges.len()
        );
        assert!(
            crossings(&ordered) * 2 < crossings(&declared),
            "ordered {} crossings, declared {}",
            crossings(&ordered),
            crossings(&declared)
        );
        assert_eq!(
            layout(&names, &pairs, &params),
            ordered,
            "layout is deterministic"
        );

        // Layers are longest paths: tasks are numbered in dependency order.
        let mut expected = vec![0; 200];
        let mut sorted: Vec<&Edge> = pairs.iter().collect();
        sorted.sort_by_key(|edge| edge.to[1..].parse::<usize>().expect("numbered task"));
        for edge in sorted {
            let (from, to): (usize, usize) = (
                edge.from[1..].parse().unwrap(),
                edge.to[1..].parse().unwrap(),
            );
            if from != to {
                expected[to] = expected[to].max(expected[from] + 1);
            }
        }
        for node in &ordered.nodes {
            assert_eq!(
                node.layer,
                expected[node.name[1..].parse::<usize>().unwrap()],
                "layer of {}",
                node.name
            );
        }

        // Boxes of a layer keep the node gap, and passing edges the edge gap.
        for pair in ordered.nodes.windows(2) {
            if pair[0].layer == pair[1].layer {
                assert!(pair[1].y - pair[0].y >= params.node_height + params.node_gap);
            }
        }
        for route in &ordered.edges {
            assert!(route.points.windows(2).all(|pair| pair[0].x < pair[1].x));
            for point in &route.points[1..route.points.len() - 1] {
                for node in &ordered.nodes {
                    let inside_column = point.x >= node.x && point.x <= node.x + params.node_width;
                    let clear = point.y <= node.y - params.edge_gap
                        || point.y >= node.y + params.node_height + params.edge_gap;
                    assert!(
                        !inside_column || clear,
                        "an edge passes through {}",
                        node.name
                    );
                }
            }
        }
        assert!(
            ordered.width <= 2.0 * params.margin + 200.0 * (params.node_width + params.layer_gap)
        );
    }

    #[test]
    fn count_inversions_matches_pair_count() {
        let mut random = Random(7);
        for length in [0, 1, 2, 5, 33] {
            let values: Vec<usize> = (0..length).map(|_| random.below(6)).collect();
            let mut expected = 0;
            for i in 0..length {
                for j in i + 1..length {
                    expected += usize::from(values[i] > values[j]);
                }
            }
            let mut sorted = values.clone();
            assert_eq!(count_inversions(&mut sorted), expected, "{values:?}");
            assert!(sorted.windows(2).all(|pair| pair[0] <= pair[1]));
        }
    }

    #[test]
    fn closest_spaced_spreads_equal_wishes_around_them() {
        let even = [(0.0, 1.0), (0.0, 1.0), (0.0, 1.0)];
        assert_eq!(
            closest_spaced(&even, &[0.0, 10.0, 20.0]),
            [-10.0, 0.0, 10.0]
        );

        let apart = [(0.0, 1.0), (50.0, 1.0)];
        assert_eq!(closest_spaced(&apart, &[0.0, 10.0]), [0.0, 50.0]);

        let heavy_last = [(0.0, 1.0), (0.0, 3.0)];
        assert_eq!(closest_spaced(&heavy_last, &[0.0, 8.0]), [-6.0, 2.0]);
    }
}
